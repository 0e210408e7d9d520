"""Token-by-token agreement on made-up answers (``agree.compare``), the verdicts, and the resumable run folder."""

import json

import pytest

from ziya_trt.eval import agree, bench
from ziya_trt.eval.store import ITEMS_FILE, EvalError, RunStore

T = [b"\xe4", b"\xbd", b"\xa0", b" hello", b" world"]  # byte-fallback pieces first: compared by bytes, not strings
LP = [-0.1, -0.2, -0.3, -0.4, -0.5]


def test_identical_answers_match_and_give_every_difference():
    c = agree.compare(T, [x + 0.01 for x in LP], "length", T, LP, False, ())
    assert c["match"] and c["first_divergence"] is None and c["compared"] == 5
    assert c["logprob_diffs"] == pytest.approx([0.01] * 5)


def test_the_first_different_token_is_the_divergence_and_bounds_the_differences():
    served = T[:2] + [b"\xa1"] + T[3:]
    c = agree.compare(served, LP, "length", T, LP, False, ())
    assert not c["match"] and c["first_divergence"] == 2 and len(c["logprob_diffs"]) == 2


def test_ending_together_at_end_of_sequence_matches():
    c = agree.compare(T[:3], LP[:3], "stop", T[:3], LP[:3], True, ())
    assert c["match"]


def test_one_side_ending_alone_is_a_divergence():
    # the reference ended (eos) where the server went on
    assert agree.compare(T, LP, "length", T[:3], LP[:3], True, ())["first_divergence"] == 3
    # the server stopped with no stop string where the reference went on
    assert agree.compare(T[:3], LP[:3], "stop", T, LP, False, ())["first_divergence"] == 3
    # the same tokens, but the reference ended while the server ran out of tokens: both ran out would match
    assert agree.compare(T[:3], LP[:3], "length", T[:3], LP[:3], True, ())["first_divergence"] == 3
    assert agree.compare(T[:3], LP[:3], "length", T[:3], LP[:3], False, ())["match"]


def test_a_stop_string_that_the_reference_goes_on_to_matches():
    ref = [b" Yes", b".", b"\n", b"<", b"human", b">:"]
    served = ref[:3]
    assert agree.compare(served, LP[:3], "stop", ref, LP + [0.0], False, ("<human>:",))["match"]
    other = [b" Yes", b".", b"\n", b"No", b"pe", b"!"]
    assert agree.compare(served, LP[:3], "stop", other, LP + [0.0], False, ("<human>:",))["first_divergence"] == 3


def test_agree_verdict():
    cfg = agree.AgreeConfig.__new__(agree.AgreeConfig)  # thresholds only, no checkpoint needed
    object.__setattr__(cfg, "min_match", 0.9)
    object.__setattr__(cfg, "max_logprob_diff", 0.05)
    s = {"exact_match_rate": 0.95, "logprob_diff": {"abs": {"p95": 0.01}}}
    assert agree.verdict(s, cfg) == []
    s = {"exact_match_rate": 0.5, "logprob_diff": {"abs": {"p95": 0.2}}}
    assert [m.split()[0] for m in agree.verdict(s, cfg)] == ["exact-match", "p95"]


def test_bench_verdict_reads_the_interval_s_low_end(tmp_path):
    cfg = bench.BenchConfig(urls=("http://a/v1", "http://b/v1"), tasks=("ceval",), out=tmp_path, max_drop=0.01)
    paired = {"n": 500, "diff": -0.004, "ci_low": -0.009, "ci_high": 0.001}
    assert bench.verdict({"paired": paired}, cfg) == []
    assert "under -0.01" in bench.verdict({"paired": paired | {"ci_low": -0.012}}, cfg)[0]
    with pytest.raises(EvalError, match="same server twice"):
        bench.BenchConfig(urls=("http://a/v1", "http://a/v1"), tasks=("ceval",), out=tmp_path)
    with pytest.raises(EvalError, match="--tasks: gsm8k"):
        bench.BenchConfig(urls=("http://a/v1",), tasks=("gsm8k",), out=tmp_path)


def test_the_run_folder_resumes_drops_a_cut_line_and_refuses_other_options(tmp_path):
    s = RunStore(tmp_path, "bench", {"limit": 3}, ["ziya-trt", "eval"])
    assert s.open() == {} and not s.resumed
    s.append({"key": "a", "v": 1})
    s.append({"key": "b", "v": 2})
    with (tmp_path / ITEMS_FILE).open("ab") as f:
        f.write(b'{"key": "c", "v"')  # a kill in the middle of a line
    again = RunStore(tmp_path, "bench", {"limit": 3}, ["ziya-trt", "eval"])
    assert set(again.open()) == {"a", "b"} and again.resumed
    again.append({"key": "c", "v": 3})
    assert [json.loads(x)["key"] for x in (tmp_path / ITEMS_FILE).read_text().splitlines()] == ["a", "b", "c"]
    with pytest.raises(EvalError, match=r"other options \(limit: 3 then, 4 now\)"):
        RunStore(tmp_path, "bench", {"limit": 4}, []).open()
    with pytest.raises(EvalError, match="holds an 'eval bench' run"):
        RunStore(tmp_path, "agree", {"limit": 3}, []).open()


def test_without_matplotlib_the_plot_is_skipped_with_a_message(tmp_path, monkeypatch):
    import sys

    from rich.console import Console

    from ziya_trt.eval import report

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    con = Console(record=True, width=200)
    summary = {"engines": {"A": {"url": "u", "accuracy": 0.5, "tasks": {"ceval": {"accuracy": 0.5}}}}}
    assert report.plot_bench(tmp_path, summary, ("ceval",), con) == []
    assert "pip install 'ziya-trt[plots]'" in con.export_text()
    assert list(tmp_path.iterdir()) == []
