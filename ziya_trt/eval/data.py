"""What ``ziya-trt eval`` asks: the bilingual prompt set shipped with the package (``agree``), and multiple-choice
items of C-Eval, CMMLU and MMLU (``bench``) read from the files a user has, or through ModelScope.

The multiple-choice tasks follow lm-evaluation-harness's task definitions (``lm_eval/tasks/ceval``, ``cmmlu``,
``mmlu/default``): the split evaluated, the few-shot split and sampler (the first k), the prompt
``question\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\n答案：`` (``Answer:`` for MMLU) under a one-line description, and few-shot
examples joined as ``<prompt> <letter>`` with blank lines between. Only the scoring differs: lm-eval scores by the
log-likelihood of `` A``..`` D``, which a served API can give only with prompt log probabilities (``echo``), which
this server, like TensorRT-LLM's backend, does not compute; so the answer is generated greedily and its first
standalone letter A-D taken (``parse_choice``), as evalscope's generation mode does. The dataset ids are
evalscope's ModelScope ones; neither package is needed at run time.

Files: point ``--data`` at a folder as ``modelscope download --dataset <id>`` or a git clone leaves it (the task's
split folders in it, or in a sub-folder named after the task):

- C-Eval: ``val/<subject>_val.csv``, ``dev/<subject>_dev.csv`` with columns ``id,question,A,B,C,D,answer``;
- CMMLU: ``test/<subject>.csv``, ``dev/<subject>.csv`` with columns ``,Question,A,B,C,D,Answer``;
- MMLU: ``test/<subject>_test.csv``, ``dev/<subject>_dev.csv`` without a header (question, A-D, answer), as the
  original release; a header naming the columns is read too, as is a 0-3 answer index or a ``choices`` list.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .store import EvalError

LETTERS = ("A", "B", "C", "D")
PROMPTS_FILE = "agree_prompts.jsonl"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    modelscope_id: str
    split: str
    fewshot_split: str
    cue: str  # the line the answer follows
    description: str  # one line above the questions; {subject} is the subject, spaces for underscores


TASKS = {
    "ceval": TaskSpec("ceval", "modelscope/ceval-exam", "val", "dev", "答案：",
                      "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n"),
    "cmmlu": TaskSpec("cmmlu", "modelscope/cmmlu", "test", "dev", "答案：",
                      "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"),
    "mmlu": TaskSpec("mmlu", "modelscope/mmlu", "test", "dev", "Answer:",
                     "The following are multiple choice questions (with answers) about {subject}.\n\n"),
}


@dataclass(frozen=True)
class MCItem:
    task: str
    subject: str
    id: str
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # A-D

    @property
    def key(self) -> str:
        return f"{self.task}/{self.subject}/{self.id}"

    def block(self, cue: str) -> str:
        lines = [self.question.strip()] + [f"{k}. {c}" for k, c in zip(LETTERS, self.choices)]
        return "\n".join(lines) + "\n" + cue


def prompt_text(item: MCItem, shots: list[MCItem]) -> str:
    """The user message: the description, the few-shot examples with their answers, then the question."""
    spec = TASKS[item.task]
    parts = [ex.block(spec.cue) + " " + ex.answer for ex in shots] + [item.block(spec.cue)]
    return spec.description.format(subject=item.subject.replace("_", " ")) + "\n\n".join(parts)


_CHOICE = re.compile(r"(?<![A-Za-z])([ABCD])(?![A-Za-z])")


def parse_choice(text: str) -> str | None:
    """The first letter A-D that stands alone (not inside a word): ``B``, ``答案：C``, ``(D)``, ``The answer is A.``"""
    m = _CHOICE.search(text)
    return m.group(1) if m else None


# --- rows to items ---------------------------------------------------------------------------------------------
_ALIASES = {"question": ("question", "input"), "answer": ("answer", "target", "label")}


def _field(row: dict, name: str):
    low = {str(k).strip().lower(): v for k, v in row.items()}
    for alias in _ALIASES.get(name, (name,)):
        if alias in low:
            return low[alias]
    return None


def item_from_row(task: str, subject: str, row: dict, index: int) -> MCItem:
    where = f"{task}/{subject} item {index}"
    question = _field(row, "question")
    choices = _field(row, "choices")
    if choices is None:
        choices = [row.get(k) for k in LETTERS]
    answer = _field(row, "answer")
    if isinstance(answer, int) or (isinstance(answer, str) and answer.strip().isdigit()):
        answer = LETTERS[int(answer)] if 0 <= int(answer) < 4 else None
    if isinstance(answer, str):
        answer = answer.strip().upper()
    if not question or choices is None or len(choices) != 4 or any(c is None for c in choices) or answer not in LETTERS:
        raise EvalError(f"{where}: not a multiple-choice row with a question, four choices A-D and an answer "
                        f"(columns: {', '.join(map(str, row))})")
    rid = row.get("id")
    if rid in (None, ""):
        rid = row.get("") or row.get("Unnamed: 0") or index
    return MCItem(task, subject, str(rid), str(question), tuple(str(c) for c in choices), answer)


# --- local files -----------------------------------------------------------------------------------------------
def _split_dir(root: Path, spec: TaskSpec, split: str) -> Path | None:
    for base in (root / spec.name, root / spec.name / "data", root, root / "data"):
        if (base / split).is_dir():
            return base / split
    return None


def _subject_of(path: Path, split: str) -> str:
    return path.stem.removesuffix(f"_{split}")


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    head = [h.strip() for h in rows[0]]
    if any(h.lower() in ("question", "input") for h in head):
        return [dict(zip(head, r)) for r in rows[1:] if r]
    # no header (MMLU's original files): question, A, B, C, D, answer
    return [dict(zip(["question", "A", "B", "C", "D", "answer"], r)) for r in rows if r]


def local_subjects(root: Path, task: str) -> list[str]:
    spec = TASKS[task]
    d = _split_dir(root, spec, spec.split)
    if d is None:
        raise EvalError(f"--data {root}: no '{spec.split}' folder for {task} in it or in {root / task} "
                        f"(the layout of ModelScope's {spec.modelscope_id}; see docs/eval.md)")
    return sorted(_subject_of(p, spec.split) for p in d.glob("*.csv"))


def local_items(root: Path, task: str, subject: str, split: str) -> list[MCItem]:
    spec = TASKS[task]
    d = _split_dir(root, spec, split)
    if d is None:
        return []
    for name in (f"{subject}_{split}.csv", f"{subject}.csv"):
        if (d / name).is_file():
            return [item_from_row(task, subject, r, i) for i, r in enumerate(_read_csv(d / name))]
    return []


# --- ModelScope ------------------------------------------------------------------------------------------------
def modelscope_items(task: str, subject: str, split: str) -> list[MCItem]:  # pragma: no cover - needs the network
    """One subject's split through ``modelscope.MsDataset`` (downloads on first use, then ModelScope's cache)."""
    from modelscope import MsDataset

    ds = MsDataset.load(TASKS[task].modelscope_id, subset_name=subject, split=split)
    return [item_from_row(task, subject, dict(r), i) for i, r in enumerate(ds)]


@dataclass(frozen=True)
class Source:
    """Where the items come from: a local folder, or ModelScope (``data`` None)."""

    data: Path | None
    subjects: tuple[str, ...] = ()  # empty: every subject found in the folder

    def subjects_of(self, task: str) -> list[str]:
        if self.subjects:
            return list(self.subjects)
        if self.data is None:
            raise EvalError(f"{task}: give --subjects (e.g. computer_network,high_school_physics) to load from "
                            "ModelScope, or --data DIR with the files")
        return local_subjects(self.data, task)

    def items(self, task: str, subject: str, split: str) -> list[MCItem]:
        return local_items(self.data, task, subject, split) if self.data is not None else \
            modelscope_items(task, subject, split)


def load_items(tasks: list[str], source: Source, limit: int | None, fewshot: int) -> list[tuple[MCItem, list[MCItem]]]:
    """Each task's items (the first ``limit`` of each subject) with their few-shot examples."""
    out = []
    for task in tasks:
        if task not in TASKS:
            raise EvalError(f"--tasks: unknown task {task!r}; known: {', '.join(TASKS)}")
        spec = TASKS[task]
        for subject in source.subjects_of(task):
            items = source.items(task, subject, spec.split)
            if not items:
                raise EvalError(f"{task}/{subject}: no items in its '{spec.split}' split")
            shots = source.items(task, subject, spec.fewshot_split)[:fewshot] if fewshot else []
            if len(shots) < fewshot:
                raise EvalError(f"{task}/{subject}: --fewshot {fewshot} but its '{spec.fewshot_split}' split has "
                                f"{len(shots)} items")
            out += [(it, shots) for it in items[:limit]]
    if not out:
        raise EvalError("no items to evaluate")
    keys = [it.key for it, _ in out]
    if len(set(keys)) != len(keys):
        raise EvalError("two items share an id within a subject; ids must be unique")
    return out


# --- the agreement prompts -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AgreePrompt:
    id: str
    kind: str
    messages: tuple[dict, ...]


def agree_prompts(path: Path | None = None) -> list[AgreePrompt]:
    """The bundled bilingual set (chat in Chinese and English, code, long context, several turns), or a JSONL file
    of ``{"id", "kind", "messages": [{"role", "content"}, ...]}``."""
    text = path.read_text(encoding="utf-8") if path else \
        resources.files("ziya_trt.eval").joinpath("data").joinpath(PROMPTS_FILE).read_text(encoding="utf-8")
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(AgreePrompt(str(d["id"]), str(d.get("kind", "chat")), tuple(d["messages"])))
        except (ValueError, KeyError, TypeError) as e:
            raise EvalError(f"{path or PROMPTS_FILE} line {n}: not a prompt ({type(e).__name__}: {e})") from None
    if len({p.id for p in out}) != len(out):
        raise EvalError(f"{path or PROMPTS_FILE}: two prompts share an id")
    return out
