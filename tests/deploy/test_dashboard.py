"""The Grafana dashboard: valid JSON, every query valid PromQL, and every series it reads one the server
exports (ours, the tensorrt_llm backend's families, which the engine stand-ins export too) or Triton's (nv_*)."""

import json
import re
from pathlib import Path

import promql_parser

from ziya_trt.serving.triton.backend_metrics import FAMILIES
from ziya_trt.serving.triton.gauges import ENGINE_GAUGES, FRONT_DOOR_GAUGES, KV_GAUGES
from ziya_trt.serving.request_metrics import ENGINE_QUEUE_TIME, REQUEST_METRICS

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ziya-trt-dashboard.json"
TRITON = {"nv_inference_request_success", "nv_inference_request_failure", "nv_gpu_utilization",
          "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"}


def ours() -> set[str]:
    names = {m.name for m in (*REQUEST_METRICS, ENGINE_QUEUE_TIME)}
    names |= {spec[0] for specs in (ENGINE_GAUGES, FRONT_DOOR_GAUGES, KV_GAUGES) for spec in specs.values()}
    hist = {m.name for m in (*REQUEST_METRICS, ENGINE_QUEUE_TIME) if m.kind == "histogram"}
    names |= {f.name for f in FAMILIES}
    hist |= {f.name for f in FAMILIES if f.kind == "histogram"}
    return names | {f"{h}_{s}" for h in hist for s in ("bucket", "sum", "count")}


def exprs() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def test_every_panel_queries_series_that_exist_in_valid_promql():
    d = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
    assert len(d["panels"]) >= 10 and exprs
    known = ours() | TRITON
    for e in exprs:
        promql_parser.parse(e.replace("$__rate_interval", "1m"))  # raises on invalid PromQL
        for name in re.findall(r"\b((?:ziya|nv)_[a-z_]+)\b", e):
            assert name in known, (name, e)
    used = {n for e in exprs for n in re.findall(r"\b(ziya_[a-z_]+?)(?:_bucket)?\b", e)}
    assert {"ziya_time_to_first_token_seconds", "ziya_inter_token_latency_seconds", "ziya_requests_total",
            "ziya_request_errors_total", "ziya_frontdoor_inflight_requests"} <= used


def test_the_backends_families_are_selected_by_label_values_they_have():
    """A selector such as request_type="active" names a value the family has (the stand-ins export them all)."""
    by_name = {f.name: f for f in FAMILIES}
    seen = 0
    for e in exprs():
        for name, selector in re.findall(r"\b(nv_[a-z_]+)\{([^}]*)\}", e):
            f = by_name.get(name)
            if f is None:
                continue
            for key, v in re.findall(r'(\w+)="([^"]*)"', selector):
                assert key == f.label and v in f.values, (name, key, v)
                seen += 1
    assert seen >= 3
