import json

import pytest

from perf import workload
from ziya_trt.errors import InvalidRequestError


@pytest.mark.parametrize("isl", [2, 3, 7, 128, 900])
def test_synthetic_prompts_have_exact_token_counts(tok, isl):
    items = workload.synthetic(tok, 20, isl, 16, seed=isl)
    assert all(tok.count(i.prompt) == isl == i.input_tokens for i in items)
    assert len({i.prompt for i in items}) > 1 or isl == 2
    assert workload.synthetic(tok, 20, isl, 16, seed=isl) == items  # a seed repeats


def test_impossible_length_is_a_clear_error(tok):
    with pytest.raises(InvalidRequestError, match="exactly 1 tokens"):  # bos alone is 1 token, empty is refused
        workload.synthetic(tok, 1, 1, 8)


def test_bundled_chat_set_is_bilingual_with_spread():
    items = workload.chat_set(200, seed=0)
    zh = [i for i in items if any("\u4e00" <= c <= "\u9fff" for c in i.prompt)]
    lens = sorted(len(i.prompt) for i in items)
    assert 60 <= len(zh) <= 140 and lens[-1] > 10 * lens[0] and len({i.max_tokens for i in items}) >= 4


def test_jsonl(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"prompt": "你好", "max_tokens": 9}) + "\n\n" + json.dumps({"text": "raw"}) + "\n")
    items = workload.from_jsonl(p, 3)
    assert [(i.prompt, i.max_tokens, i.raw) for i in items] == [("你好", 9, False), ("raw", 256, True), ("你好", 9, False)]
    p.write_text("{oops\n")
    with pytest.raises(InvalidRequestError, match="d.jsonl:1: not JSON"):
        workload.from_jsonl(p)
