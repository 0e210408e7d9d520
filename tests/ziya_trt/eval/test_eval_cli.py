"""``ziya-trt eval agree`` and ``eval bench`` end to end against real tritonservers: the tiny Ziya-shaped model in
float32 on the reference engine against transformers in float32 (the same numbers: every token agrees, log
probabilities within 1e-5), and the multiple-choice run on two engines (reference and synthetic) over a set the test
writes, resumed after a cut and refused with other options."""

import json

import pytest

from tests.ziya_trt.eval.mc_data import write_sets
from ziya_trt.cli import main
from ziya_trt.eval.store import ITEMS_FILE

pytestmark = pytest.mark.server

PROMPTS = [
    {"id": "zh", "kind": "chat-zh", "messages": [{"role": "user", "content": "北京在哪里？"}]},
    {"id": "en", "kind": "chat-en", "messages": [{"role": "user", "content": "Tell me about spring."}]},
    {"id": "code", "kind": "code", "messages": [{"role": "user", "content": "def add(a, b): return a + b"}]},
    {"id": "turns", "kind": "multi-turn", "messages": [
        {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "How are you?"}]},
]


def lines(path):
    return [json.loads(x) for x in (path / ITEMS_FILE).read_text().splitlines()]


def test_agree_float32_reference_engine_is_transformers(ref_server, tiny_ckpt, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PROMPTS))
    out = tmp_path / "agree"
    argv = ["eval", "agree", "--url", ref_server.openai_url, "--model-dir", str(tiny_ckpt), "--prompts",
            str(prompts), "--max-tokens", "12", "--out", str(out), "--min-match", "1.0", "--max-logprob-diff", "1e-5"]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    s = doc["summary"]
    assert doc["command"] == ["ziya-trt", *argv] and doc["options"]["template_used"] == "ziya"
    assert (s["compared"], s["exact_match_rate"], s["skipped"]) == (4, 1.0, [])
    assert s["logprob_diff"]["abs"]["count"] >= 4 and s["logprob_diff"]["abs"]["max"] < 1e-5
    rows = lines(out)
    assert "exact match of the first 12 tokens: 1.000" in capsys.readouterr().out
    # a run cut after two prompts continues with the other two, and keeps the first two as they were
    (out / ITEMS_FILE).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[:2]) + '{"key"')
    assert main(argv) == 0
    assert "resuming" in capsys.readouterr().out
    assert lines(out)[:2] == rows[:2] and [r["id"] for r in lines(out)] == ["zh", "en", "code", "turns"]
    # other options, same folder: refused, naming them
    other = list(argv)
    other[other.index("--max-tokens") + 1] = "8"
    assert main(other) == 1
    assert "max_tokens: 12 then, 8 now" in capsys.readouterr().err


def test_agree_a_template_the_tokenizer_lacks_is_a_clear_error(ref_server, tiny_ckpt, tmp_path, capsys):
    code = main(["eval", "agree", "--url", ref_server.openai_url.removesuffix("/v1"), "--model-dir", str(tiny_ckpt),
                 "--template", "chat_template", "--max-tokens", "4", "--out", str(tmp_path / "agree")])
    assert code == 1 and "no chat_template" in capsys.readouterr().err


def test_bench_two_engines_on_the_same_items(ref_server, syn_server, tmp_path, capsys):
    data = write_sets(tmp_path / "mc", n=4)
    out = tmp_path / "bench"
    argv = ["eval", "bench", "--url", ref_server.openai_url, "--url", syn_server.openai_url, "--tasks",
            "ceval,cmmlu,mmlu", "--data", str(data), "--subjects", "arithmetic", "--fewshot", "1", "--max-tokens",
            "4", "--out", str(out), "--max-drop", "1.0"]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    s, rows = doc["summary"], lines(out)
    assert len(rows) == 2 * 12 and {r["engine"] for r in rows} == {"A", "B"}
    for lab in ("A", "B"):
        mine = [r for r in rows if r["engine"] == lab]
        assert s["engines"][lab]["correct"] == sum(r["correct"] for r in mine)
        assert s["engines"][lab]["items"] == 12
    by = {(r["engine"], r["item"]): r for r in rows}
    items = {r["item"] for r in rows}
    differ = sorted(k for k in items if by["A", k]["pred"] != by["B", k]["pred"])
    assert sorted(d["item"] for d in s["disagreements"]) == differ
    p = s["paired"]
    assert p["n"] == 12 and p["diff"] == pytest.approx(p["acc_b"] - p["acc_a"])
    assert p["ci_low"] <= p["diff"] <= p["ci_high"]
    assert p["a_only"] == sum(by["A", k]["correct"] and not by["B", k]["correct"] for k in items)
    assert set(s["paired_by_task"]) == {"ceval", "cmmlu", "mmlu"}
    assert (out / "bench.png").stat().st_size > 0
    # rerun: everything is done, nothing is asked again, the same figures
    before = (out / ITEMS_FILE).read_bytes()
    assert main(argv) == 0
    assert (out / ITEMS_FILE).read_bytes() == before
    assert json.loads((out / "results.json").read_text())["summary"] == s
    assert main([*argv, "--limit", "2"]) == 1
    assert "limit: None then, 2 now" in capsys.readouterr().err
    # one engine alone: its accuracy, nothing paired
    one = tmp_path / "one"
    assert main(["eval", "bench", "--url", syn_server.openai_url, "--tasks", "mmlu", "--data", str(data), "--limit",
                 "2", "--max-tokens", "4", "--out", str(one), "--no-plots"]) == 0
    s1 = json.loads((one / "results.json").read_text())["summary"]
    assert set(s1) == {"engines"} and s1["engines"]["A"]["items"] == 4 and not (one / "bench.png").exists()


def test_a_killed_bench_run_continues_where_it_stopped(ref_server, tmp_path):
    """SIGKILL in the middle of a run (one request at a time), then the same command: the finished answers are kept
    as they were, the rest are asked, and every item is answered once."""
    import os
    import signal
    import subprocess
    import sys

    from tests.polling import wait_until

    data = write_sets(tmp_path / "mc", n=6)
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "ziya_trt.cli", "eval", "bench", "--url", ref_server.openai_url, "--tasks",
           "ceval,mmlu", "--data", str(data), "--max-tokens", "6", "--concurrency", "1", "--out", str(out),
           "--no-plots"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    items = out / ITEMS_FILE
    try:
        assert wait_until(lambda: items.exists() and len(items.read_bytes().splitlines()) >= 3, timeout_s=120,
                          every_s=0.01), "no answers written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = items.read_bytes().splitlines(keepends=True)
    assert 3 <= len(kept) < 24, "the run was not cut in the middle"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stdout
    after = items.read_bytes().splitlines(keepends=True)
    whole = [x for x in kept if x.endswith(b"\n")]
    assert after[:len(whole)] == whole
    keys = [json.loads(x)["key"] for x in after]
    assert len(keys) == len(set(keys)) == 24
    assert json.loads((out / "results.json").read_text())["summary"]["engines"]["A"]["items"] == 24
