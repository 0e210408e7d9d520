"""The load generator against the synthetic engine, where every figure is known in advance."""

import json

import pytest

from perf.bench import BenchConfig, run_point
from perf.load import LoadConfig
from perf import workload
from ziya_trt.cli import main

pytestmark = pytest.mark.server
KNOWN_TTFT, KNOWN_ITL = 0.01, 1 / 200  # the syn_server fixture's configured first-token delay and rate


def test_measured_ttft_and_itl_match_the_synthetic_engine(syn_server, tok):
    items = workload.synthetic(tok, 8, 32, 40)
    cfg = BenchConfig(url=f"grpc://{syn_server.grpc_url}", known_ttft_s=KNOWN_TTFT, known_itl_s=KNOWN_ITL)
    p = run_point(cfg, LoadConfig(concurrency=4, num_requests=24, warmup=2), items, tok)
    s = p["summary"]
    assert s["completed"] == 24 and s["errors"] == 0
    assert all(r["output_tokens"] == 40 for r in p["records"] if not r["warmup"])  # exact OSL (min_tokens)
    # the stack adds a little to TTFT and nearly nothing to the per-token interval
    assert 0 <= s["ttft"]["p50"] - KNOWN_TTFT < 0.05
    assert abs(s["itl"]["p50"] - KNOWN_ITL) < 0.001
    o = p["overhead"]
    print(f"\nload generator + stack overhead: TTFT p50 +{o['added_ttft_p50_ms']:.2f} ms, "
          f"ITL p50 {o['added_itl_p50_ms']:+.3f} ms, p99 {o['added_itl_p99_ms']:+.3f} ms")


def test_bench_cli_writes_json_csv_png_and_compares(syn_server, tiny_ckpt, tmp_path, capsys):
    args = ["bench", "--url", f"grpc://{syn_server.grpc_url}", "--tokenizer", str(tiny_ckpt), "--isl", "16",
            "--osl", "8", "--num-requests", "12", "--warmup", "1", "--concurrency", "1,4"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    for f in ("results.json", "requests.csv", "throughput_latency.png", "latency_distributions.png"):
        assert (tmp_path / "a" / f).stat().st_size > 0
    doc = json.loads((tmp_path / "a" / "results.json").read_text())
    assert [p["label"] for p in doc["points"]] == ["c=1", "c=4"]
    assert doc["versions"]["tritonclient"] and doc["machine"]["cpu_count"] and doc["config"]["isl"] == 16
    assert len(doc["points"][0]["records"]) == 13  # 12 measured + 1 warm-up, every one kept
    csv_lines = (tmp_path / "a" / "requests.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 26
    # an open-loop run, then a comparison: B is the same server, so nothing regresses by 10x
    assert main(args[:-2] + ["--rate", "20", "--out", str(tmp_path / "b"), "--no-plots"]) == 0
    assert main(["bench", "compare", str(tmp_path / "a" / "results.json"), str(tmp_path / "a" / "results.json")]) == 0
    worse = json.loads((tmp_path / "a" / "results.json").read_text())
    worse["points"][0]["summary"]["ttft"]["p99"] *= 2
    (tmp_path / "worse.json").write_text(json.dumps(worse))
    capsys.readouterr()
    assert main(["bench", "compare", str(tmp_path / "a" / "results.json"), str(tmp_path / "worse.json")]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_token_mode_bench_calls_the_engine_directly_with_the_same_text(syn_server, tok, tiny_ckpt, tmp_path):
    """--mode token skips the front door: the client tokenises, and the engine's echo decodes to the same texts."""
    base = ["bench", "--url", f"grpc://{syn_server.grpc_url}", "--tokenizer", str(tiny_ckpt), "--isl", "16",
            "--osl", "8", "--num-requests", "6", "--warmup", "0", "--concurrency", "2", "--no-plots"]
    assert main(base + ["--mode", "token", "--model", "synthetic", "--out", str(tmp_path / "tok")]) == 0
    assert main(base + ["--out", str(tmp_path / "txt")]) == 0
    tok_doc = json.loads((tmp_path / "tok" / "results.json").read_text())
    txt_doc = json.loads((tmp_path / "txt" / "results.json").read_text())
    assert tok_doc["config"]["mode"] == "token" and txt_doc["config"]["mode"] == "text"
    recs = {r["index"]: r for r in tok_doc["points"][0]["records"]}
    assert tok_doc["points"][0]["summary"]["errors"] == 0 and len(recs) == 6
    assert all(r["output_tokens"] == 8 for r in recs.values())
    assert {i: r["text"] for i, r in recs.items()} == {r["index"]: r["text"] for r in txt_doc["points"][0]["records"]}


def test_the_openai_path_gives_the_same_texts_side_by_side(syn_server, tiny_ckpt, tmp_path):
    """--mode text,token,openai runs each path at each point, in one run; the synthetic engine's echo
    makes every text checkable, and all three get the same ones."""
    assert main(["bench", "--url", f"http://{syn_server.http_url}", "--tokenizer", str(tiny_ckpt), "--isl", "16",
                 "--osl", "8", "--num-requests", "6", "--warmup", "0", "--concurrency", "2", "--no-plots",
                 "--mode", "text,token,openai", "--engine-model", "synthetic", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [p["label"] for p in doc["points"]] == ["text c=2", "token c=2", "openai c=2"]
    texts = [{r["index"]: r["text"] for r in p["records"]} for p in doc["points"]]
    assert all(p["summary"]["errors"] == 0 and p["summary"]["completed"] == 6 for p in doc["points"])
    assert texts[0] == texts[1] == texts[2] and all(r["output_tokens"] == 8 for r in doc["points"][2]["records"])
