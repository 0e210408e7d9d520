"""The items of ``eval``: the three benchmark layouts read from local files, lm-evaluation-harness's prompt format,
the answer parser, the bundled prompt set, and clear errors for data that does not fit."""

import json

import pytest

from tests.ziya_trt.eval.mc_data import write_sets
from ziya_trt.eval import data
from ziya_trt.eval.store import EvalError


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    return write_sets(tmp_path_factory.mktemp("mc"))


@pytest.mark.parametrize("task", ["ceval", "cmmlu", "mmlu"])
def test_each_layout_reads_the_same_items(sets, task):
    src = data.Source(sets)
    assert src.subjects_of(task) == ["arithmetic", "counting"]
    items = src.items(task, "arithmetic", data.TASKS[task].split)
    assert len(items) == 6
    first = items[0]
    assert first.choices[["A", "B", "C", "D"].index(first.answer)] == str(2 + 3)  # 2 + 3, the right option
    assert [it.answer for it in items[:4]] == ["A", "B", "C", "D"]
    assert len({it.key for it in items}) == 6


def test_the_prompt_is_lm_eval_harness_s(sets):
    (item, shots), = data.load_items(["ceval"], data.Source(sets, ("arithmetic",)), limit=1, fewshot=2)
    text = data.prompt_text(item, shots)
    desc = "以下是中国关于arithmetic考试的单项选择题，请选出其中的正确答案。\n\n"
    shot = shots[0]
    assert text.startswith(desc + f"{shot.question}\nA. {shot.choices[0]}\nB. {shot.choices[1]}\nC. {shot.choices[2]}"
                           f"\nD. {shot.choices[3]}\n答案： {shot.answer}\n\n")
    assert text.endswith(f"{item.question}\nA. {item.choices[0]}\nB. {item.choices[1]}\nC. {item.choices[2]}\n"
                         f"D. {item.choices[3]}\n答案：")
    assert text.count("答案：") == 3
    (mitem, _), = data.load_items(["mmlu"], data.Source(sets, ("counting",)), limit=1, fewshot=0)
    assert data.prompt_text(mitem, []).startswith("The following are multiple choice questions (with answers) about "
                                                  "counting.\n\nWhat is")
    assert data.prompt_text(mitem, []).endswith("\nAnswer:")


@pytest.mark.parametrize("text, letter", [
    ("B", "B"), (" C.", "C"), ("答案：D", "D"), ("答案是A，因为", "A"), ("(B) 7", "B"), ("The answer is C.", "C"),
    ("Apples are red", None), ("I think", None), ("", None), ("ABC", None), ("选 B 和 C", "B"),
])
def test_parse_choice(text, letter):
    assert data.parse_choice(text) == letter


def test_rows_in_other_shapes():
    it = data.item_from_row("mmlu", "x", {"question": "q", "choices": ["1", "2", "3", "4"], "answer": 2}, 0)
    assert (it.answer, it.choices, it.id) == ("C", ("1", "2", "3", "4"), "0")
    it = data.item_from_row("mmlu", "x", {"input": "q", "A": "1", "B": "2", "C": "3", "D": "4", "target": "d"}, 5)
    assert it.answer == "D"
    with pytest.raises(EvalError, match="mmlu/x item 3.*columns: question, A"):
        data.item_from_row("mmlu", "x", {"question": "q", "A": "1"}, 3)


def test_errors_name_what_is_missing(sets, tmp_path):
    with pytest.raises(EvalError, match="no 'val' folder for ceval"):
        data.load_items(["ceval"], data.Source(tmp_path), None, 0)
    with pytest.raises(EvalError, match="unknown task 'gsm8k'"):
        data.load_items(["gsm8k"], data.Source(sets), None, 0)
    with pytest.raises(EvalError, match="--fewshot 5 but its 'dev' split has 3"):
        data.load_items(["cmmlu"], data.Source(sets), None, 5)
    with pytest.raises(EvalError, match="give --subjects"):
        data.load_items(["ceval"], data.Source(None), None, 0)
    with pytest.raises(EvalError, match="ceval/nope: no items"):
        data.load_items(["ceval"], data.Source(sets, ("nope",)), None, 0)


def test_the_bundled_prompt_set_is_bilingual_and_varied():
    prompts = data.agree_prompts()
    kinds = {p.kind for p in prompts}
    assert {"chat-zh", "chat-en", "code", "long", "multi-turn"} <= kinds
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in p.messages[-1]["content"]) for p in prompts)
    assert all(p.messages[-1]["role"] == "user" for p in prompts)


def test_a_prompt_file_of_ones_own(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}]}) + "\n\nnot json\n")
    with pytest.raises(EvalError, match="line 3: not a prompt"):
        data.agree_prompts(f)
    f.write_text(json.dumps({"id": "x", "messages": [{"role": "user", "content": "hi"}]}) + "\n")
    (p,) = data.agree_prompts(f)
    assert (p.id, p.kind) == ("x", "chat")
