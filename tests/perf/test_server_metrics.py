"""The server's metrics around a sweep point: parsing, differencing, bucket quantiles, and a real scrape."""

import json

import pytest

from perf import server_metrics as sm
from ziya_trt.cli import main

BEFORE = """# TYPE ziya_requests_total counter
ziya_requests_total{model="ziya",finish_reason="length"} 3
# TYPE ziya_time_to_first_token_seconds histogram
ziya_time_to_first_token_seconds_bucket{model="ziya",le="0.1"} 1
ziya_time_to_first_token_seconds_bucket{model="ziya",le="0.2"} 1
ziya_time_to_first_token_seconds_bucket{model="ziya",le="+Inf"} 1
ziya_time_to_first_token_seconds_count{model="ziya"} 1
ziya_time_to_first_token_seconds_sum{model="ziya"} 0.05
# TYPE ziya_frontdoor_inflight_requests gauge
ziya_frontdoor_inflight_requests{model="ziya"} 7
# TYPE other_series counter
other_series_total 5
"""
AFTER = """# TYPE ziya_requests_total counter
ziya_requests_total{model="ziya",finish_reason="length"} 13
ziya_requests_total{model="ziya",finish_reason="stop"} 2
# TYPE ziya_time_to_first_token_seconds histogram
ziya_time_to_first_token_seconds_bucket{model="ziya",le="0.1"} 1
ziya_time_to_first_token_seconds_bucket{model="ziya",le="0.2"} 11
ziya_time_to_first_token_seconds_bucket{model="ziya",le="+Inf"} 11
ziya_time_to_first_token_seconds_count{model="ziya"} 11
ziya_time_to_first_token_seconds_sum{model="ziya"} 1.55
# TYPE ziya_frontdoor_inflight_requests gauge
ziya_frontdoor_inflight_requests{model="ziya"} 2
"""


def snap(text):
    s, t = sm.parse(text)
    return {"t": 0, "samples": s, "types": t, "errors": {}}


def test_counters_and_histograms_are_differenced_gauges_kept_and_others_dropped():
    d = sm.delta(snap(BEFORE), snap(AFTER))
    assert d['ziya_requests_total{finish_reason="length",model="ziya"}'] == 10
    assert d['ziya_requests_total{finish_reason="stop",model="ziya"}'] == 2
    assert d['ziya_frontdoor_inflight_requests{model="ziya"}'] == 2
    assert not any(k.startswith("other") for k in d)
    g = sm.digest(d)
    assert g["requests"] == {"length": 10, "stop": 2}
    assert g["ttft"]["count"] == 10 and g["ttft"]["mean_s"] == pytest.approx(0.15)
    # all ten new observations fell in (0.1, 0.2]: the median interpolates to the middle, as PromQL does
    assert g["ttft"]["p50_s"] == pytest.approx(0.15) and g["ttft"]["p99_s"] == pytest.approx(0.199)


def test_a_label_value_with_quotes_survives_the_round_trip():
    k = sm.key("x", {"a": 'say "hi"\\n', "b": "2"})
    assert sm._labels(k) == {"a": 'say "hi"\\n', "b": "2"}


def test_an_unreachable_endpoint_is_recorded_not_raised():
    got = sm.scrape(("http://127.0.0.1:9/metrics",), timeout_s=0.5)
    assert got["samples"] == {} and "127.0.0.1:9" in next(iter(got["errors"]))


@pytest.mark.server
def test_bench_records_what_the_server_saw(syn_server, tiny_ckpt, tmp_path):
    out = tmp_path / "b"
    assert main(["bench", "--url", f"grpc://{syn_server.grpc_url}", "--tokenizer", str(tiny_ckpt), "--isl", "16",
                 "--osl", "8", "--num-requests", "10", "--warmup", "2", "--concurrency", "2", "--no-plots",
                 "--metrics-url", syn_server.metrics_url, "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    seen = doc["points"][0]["server_metrics"]
    g = seen["digest"]
    assert seen["errors"] == {} and doc["config"]["metrics_urls"] == [syn_server.metrics_url]
    assert sum(g["requests"].values()) == 12 and g["generation_tokens"] == 12 * 8  # warm-up included
    assert g["triton_success"]["ziya"] >= 12 and g["ttft"]["count"] == 12 and g["ttft"]["p50_s"] > 0
    assert seen["before"]["samples"] and seen["after"]["samples"]
