"""bench --dataset multiturn: KV reuse against none, per turn, on the reference engine (tiny model)."""

import json

import pytest

from perf import multiturn
from perf.multiturn import TurnRecord
from ziya_trt.cli import main


def test_the_summary_pairs_arms_per_turn_and_counts_failures():
    recs = [TurnRecord("reuse", 0, 1, 0, ttft=0.2, prompt_tokens=100, cached_tokens=0),
            TurnRecord("no_reuse", 0, 1, 0, ttft=0.2, prompt_tokens=100, cached_tokens=0),
            TurnRecord("reuse", 0, 2, 0, ttft=0.1, prompt_tokens=300, cached_tokens=256),
            TurnRecord("reuse", 1, 2, 0, ttft=0.3, prompt_tokens=300, cached_tokens=224),
            TurnRecord("no_reuse", 0, 2, 0, ttft=0.4, prompt_tokens=300, cached_tokens=0),
            TurnRecord("no_reuse", 1, 2, 0, error="boom", error_type="ServerError")]
    rows = multiturn.summarize(recs, 2)
    assert rows[0]["ttft_ratio"] == pytest.approx(1.0)
    r2 = rows[1]
    assert r2["reuse"]["n"] == 2 and r2["reuse"]["cached_tokens"] == 240 and r2["reuse"]["ttft_min_ms"] == 100
    assert r2["no_reuse"]["n"] == 1 and r2["no_reuse"]["errors"] == 1
    assert r2["ttft_ratio"] == pytest.approx(r2["reuse"]["ttft_p50_ms"] / 400)


@pytest.mark.parametrize("bad", [dict(turns=0), dict(concurrency=0), dict(answer_tokens=0)])
def test_a_config_that_cannot_run_is_refused(bad):
    with pytest.raises(ValueError):
        multiturn.MultiTurnConfig(**bad)


@pytest.mark.server
def test_reuse_arm_is_served_from_the_cache_and_the_other_never(ref_server, tiny_ckpt, tmp_path):
    out = tmp_path / "mt"
    args = ["bench", "--url", f"grpc://{ref_server.grpc_url}", "--tokenizer", str(tiny_ckpt), "--dataset",
            "multiturn", "--conversations", "2", "--turns", "3", "--question-tokens", "40", "--osl", "8",
            "--concurrency", "2", "--out", str(out)]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert (out / "multiturn_ttft.png").stat().st_size > 0
    recs = doc["records"]
    assert len(recs) == 2 * 2 * 3 and not any(r["error"] for r in recs)
    reuse = [r for r in recs if r["arm"] == "reuse"]
    assert all(r["cached_tokens"] == 0 for r in recs if r["arm"] == "no_reuse")
    assert all(r["cached_tokens"] == 0 for r in reuse if r["turn"] == 1)  # each conversation's tag is its own
    assert all(r["cached_tokens"] >= 32 for r in reuse if r["turn"] > 1)
    rows = doc["turns"]
    assert [r["turn"] for r in rows] == [1, 2, 3] and rows[2]["reuse"]["prompt_tokens"] > rows[0]["reuse"]["prompt_tokens"]
    # the two arms send prompts of the same length
    assert rows[2]["reuse"]["prompt_tokens"] == pytest.approx(rows[2]["no_reuse"]["prompt_tokens"], rel=0.05)


@pytest.mark.server
def test_multiturn_takes_one_concurrency_and_a_mode_that_reports_cached_tokens(ref_server, tiny_ckpt, capsys):
    base = ["bench", "--url", f"grpc://{ref_server.grpc_url}", "--tokenizer", str(tiny_ckpt), "--dataset", "multiturn"]
    assert main(base + ["--concurrency", "1,2"]) == 2
    assert main(base + ["--mode", "token"]) == 2
    err = capsys.readouterr().err
    assert "one --concurrency" in err and "text or openai" in err
