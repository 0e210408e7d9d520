"""``ziya-trt eval bench``: multiple-choice accuracy through the served API, one engine or two on the same items.

Each item is one chat request (the prompt of ``data.prompt_text``, greedy, a few tokens) and its first standalone
letter A-D is the answer (``data`` says why generation and not log-likelihood). With two engines, A (the first
``--url``, the reference) and B (the second, the candidate) answer the same items; the result is each accuracy,
the paired difference B - A with a bootstrap interval, McNemar's discordant counts, and every item where their
answers differ. ``--max-drop`` turns the interval into a verdict: B fails when the interval's low end is under
``-max_drop`` (docs/eval.md: how many items that needs).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from .. import errors as E
from . import stats
from .api import ChatAPI, is_refusal
from .data import TASKS, MCItem, Source, load_items, parse_choice, prompt_text
from .store import EvalError, RunStore

LABELS = ("A", "B")


@dataclass(frozen=True)
class BenchConfig:
    urls: tuple[str, ...]  # OpenAI-compatible base URLs (…/v1): A, and B to compare
    tasks: tuple[str, ...]
    out: Path
    data: Path | None = None  # None: ModelScope
    subjects: tuple[str, ...] = ()
    limit: int | None = None  # items per subject
    fewshot: int = 0
    model: str = "ziya"
    max_tokens: int = 16
    concurrency: int = 4
    n_boot: int = 10_000
    seed: int = 0
    max_drop: float | None = None
    api_key: str | None = None
    timeout_s: float = 300.0

    def __post_init__(self):
        if not 1 <= len(self.urls) <= 2:
            raise EvalError("--url: one server, or two to compare")
        if len(set(self.urls)) != len(self.urls):
            raise EvalError("--url: the same server twice; give two different ones to compare")
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise EvalError(f"--tasks: {', '.join(unknown) or 'none given'}; known: {', '.join(TASKS)}")
        for name, v, lo in (("--limit", self.limit, 1), ("--fewshot", self.fewshot, 0),
                            ("--max-tokens", self.max_tokens, 1), ("--concurrency", self.concurrency, 1)):
            if v is not None and v < lo:
                raise EvalError(f"{name}: must be at least {lo}")
        if self.data is not None and not Path(self.data).is_dir():
            raise EvalError(f"--data {self.data}: not a folder")

    def options(self) -> dict:
        return {"urls": list(self.urls), "tasks": list(self.tasks), "model": self.model,
                "data": str(self.data) if self.data else "modelscope", "subjects": list(self.subjects),
                "limit": self.limit, "fewshot": self.fewshot, "max_tokens": self.max_tokens}


def ask(api: ChatAPI, item: MCItem, shots: list[MCItem], max_tokens: int) -> dict:
    """One item on one engine: the row kept in items.jsonl."""
    try:
        ans = api.chat([{"role": "user", "content": prompt_text(item, shots)}], max_tokens)
    except E.ZiyaError as e:
        if is_refusal(e):
            return {"skipped": f"the server refused it: {e.message}"}
        raise
    pred = parse_choice(ans.text)
    return {"text": ans.text, "pred": pred, "correct": pred == item.answer}


def _run_items(cfg: BenchConfig, items, done: dict, store: RunStore, progress) -> None:
    apis = [ChatAPI(u, cfg.model, cfg.api_key, cfg.timeout_s) for u in cfg.urls]
    todo = [(e, it, shots) for e in range(len(cfg.urls)) for it, shots in items if f"{LABELS[e]}:{it.key}" not in done]
    tasks = {e: progress.add_task(f"{LABELS[e]} {cfg.urls[e]}", total=len(items),
                                  completed=sum(1 for k in done if k.startswith(LABELS[e] + ":")))
             for e in range(len(cfg.urls))}
    stop = threading.Event()

    def one(e: int, it: MCItem, shots) -> None:
        if stop.is_set():
            return
        try:
            row = ask(apis[e], it, shots, cfg.max_tokens)
        except BaseException:
            stop.set()
            raise
        store.append({"key": f"{LABELS[e]}:{it.key}", "engine": LABELS[e], "item": it.key, "task": it.task,
                      "subject": it.subject, "gold": it.answer, **row})
        progress.advance(tasks[e])

    with ThreadPoolExecutor(cfg.concurrency) as pool:
        futures = [pool.submit(one, *t) for t in todo]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for f in finished:
            if f.exception() is not None:
                stop.set()
                pool.shutdown(cancel_futures=True)
                raise f.exception()


def _accuracy(rows: list[dict]) -> dict:
    answered = [r for r in rows if "skipped" not in r]
    n = len(answered)
    return {"items": n, "correct": sum(r["correct"] for r in answered), "skipped": len(rows) - n,
            "unparsed": sum(r["pred"] is None for r in answered),
            "accuracy": sum(r["correct"] for r in answered) / n if n else None}


def summarize(rows: list[dict], cfg: BenchConfig) -> dict:
    by = {lab: [r for r in rows if r["engine"] == lab] for lab in LABELS[:len(cfg.urls)]}
    engines = {}
    for lab, rs in by.items():
        engines[lab] = {"url": cfg.urls[LABELS.index(lab)], **_accuracy(rs),
                        "tasks": {t: _accuracy([r for r in rs if r["task"] == t]) for t in cfg.tasks}}
    out = {"engines": engines}
    if len(cfg.urls) == 2:
        a = {r["item"]: r for r in by["A"] if "skipped" not in r}
        b = {r["item"]: r for r in by["B"] if "skipped" not in r}
        both = [k for k in a if k in b]

        def pair(keys):
            p = stats.paired([a[k]["correct"] for k in keys], [b[k]["correct"] for k in keys], cfg.n_boot, cfg.seed)
            d = (p.a_only + p.b_only) / p.n if p.n else 0.0
            return p.to_dict() | {"discordance": d,
                                  "items_for_1_point": stats.items_needed(d, 0.01) if d else None}

        out["paired"] = pair(both)
        out["paired_by_task"] = {t: pair([k for k in both if a[k]["task"] == t]) for t in cfg.tasks}
        out["disagreements"] = [{"item": k, "gold": a[k]["gold"], "A": a[k]["pred"], "B": b[k]["pred"],
                                 "A_correct": a[k]["correct"], "B_correct": b[k]["correct"]}
                                for k in both if a[k]["pred"] != b[k]["pred"]]
    return out


def verdict(summary: dict, cfg: BenchConfig) -> list[str]:
    p = summary.get("paired")
    if cfg.max_drop is None or p is None:
        return []
    if p["n"] == 0 or p["ci_low"] != p["ci_low"]:
        return ["no item answered by both engines"]
    if p["ci_low"] < -cfg.max_drop:
        return [f"B - A is {p['diff']:+.4f}, 95% interval [{p['ci_low']:+.4f}, {p['ci_high']:+.4f}]: its low end is "
                f"under -{cfg.max_drop:g} (--max-drop)"]
    return []


def run_bench(cfg: BenchConfig, command: list[str], console, plots: bool = True) -> tuple[dict, list[str]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from . import report

    items = load_items(list(cfg.tasks), Source(cfg.data, cfg.subjects), cfg.limit, cfg.fewshot)
    store = RunStore(cfg.out, "bench", cfg.options(), command)
    done = store.open()
    if store.resumed:
        report.say(console, f"resuming {cfg.out}: {len(done)} of {len(items) * len(cfg.urls)} answers done")
    t0 = time.time()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        _run_items(cfg, items, done, store, progress)
    finished = store.finished()
    rows = [finished[k] for e in range(len(cfg.urls)) for it, _ in items if (k := f"{LABELS[e]}:{it.key}") in finished]
    summary = summarize(rows, cfg)
    misses = verdict(summary, cfg)
    doc = {"kind": "bench", "command": command, "time": report.now(), "seconds_this_run": round(time.time() - t0, 1),
           "options": cfg.options() | {"n_boot": cfg.n_boot, "seed": cfg.seed, "max_drop": cfg.max_drop},
           "scoring": "generation: greedy, the first standalone letter A-D of the answer (lm-evaluation-harness's "
                      "prompts; its log-likelihood scoring needs prompt log probabilities the API does not give)",
           "versions": report.versions(), "summary": summary, "pass": not misses, "misses": misses}
    files = [report.write_json(cfg.out / "results.json", doc)]
    if plots:
        files += report.plot_bench(cfg.out, summary, cfg.tasks, console)
    report.print_bench(doc, console)
    report.say(console, "wrote " + ", ".join(str(f) for f in files))
    return doc, misses
