"""The ``tensorrt_llm`` C++ backend's own metric families, exported by the engine stand-ins.

Autoscalers and gateways (KEDA, HPA, the Gateway API Inference Extension) read the families that TensorRT-LLM's
Triton backend reports from its executor's statistics: ``nv_trt_llm_request_metrics{request_type="active"}``,
``nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type="fraction"}`` and the rest. The stand-ins export the same
families (names, kinds, help texts, labels ``model``, ``version`` and the category label, every label value;
``FAMILIES``, checked against ``contracts/backend-metrics.json``) from their own state (``readings``, from the
engine's ``stats()``), so dashboards and autoscaling read the same series here as on a GPU:

- requests: ``active`` holds a slot, ``max`` is max_batch_size, ``scheduled`` = ``active`` (every slot-holding
  request is in every step), ``context`` has no token yet, ``waiting`` = active - scheduled, as the backend
  computes it (0 here). A request waiting for a slot is in the executor's queue on a GPU, which no family reports:
  it stays in ``ziya_engine_queued_requests``;
- KV blocks: the blocks the running requests' tokens fill in a pool of max_batch_size sequences of max_seq_len
  (the reference engine's slot cache; what the synthetic engine's requests would hold), ``reused`` the prefix
  cache's blocks found since the start (reference engine with reuse on; else 0);
- runtime memory: ``cpu`` the reference engine's KV tensors; ``gpu`` and ``pinned`` 0;
- in-flight batcher: context tokens and generation requests of the latest step, no micro batches, nothing paused;
- general: the latest loop pass's time (microseconds since the epoch) and the number of passes;
- disaggregated serving: 0 (the stand-ins are not disaggregated);
- token-length histograms: one observation per engine request when it ends (the backend: one per Triton
  request, its last row's counts for a batch).

Updated every ``stats_check_period_ms`` of the model's config, as the backend does (``GaugeMirror``'s one thread;
gauges by increments, each only when its value changed). Nothing here imports Triton.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from .gauges import GaugeMirror


@dataclass(frozen=True)
class Family:
    """One metric family: every metric has the labels ``model`` and ``version``, then ``label`` = one of
    ``values``."""

    name: str
    kind: str  # gauge | counter | histogram
    help: str
    label: str
    values: tuple[str, ...]
    buckets: tuple[float, ...] = ()


BASE_LABELS = ("model", "version")
TOKEN_LEN_BUCKETS = (10.0, 50.0, 100.0, 500.0, 1000.0)
REQUEST = Family("nv_trt_llm_request_metrics", "gauge", "TRT LLM request metrics", "request_type",
                 ("active", "max", "scheduled", "context", "waiting"))
RUNTIME_MEMORY = Family("nv_trt_llm_runtime_memory_metrics", "gauge", "TRT LLM runtime memory metrics", "memory_type",
                        ("cpu", "gpu", "pinned"))
KV_CACHE = Family("nv_trt_llm_kv_cache_block_metrics", "gauge", "TRT LLM KV cache block metrics",
                  "kv_cache_block_type", ("max", "free", "used", "tokens_per", "reused", "fraction"))
DISAGGREGATED = Family("nv_trt_llm_disaggregated_serving_metrics", "counter", "TRT LLM disaggregated serving metrics",
                       "disaggregated_serving_type", ("kv_cache_transfer_ms", "request_count"))
INFLIGHT_BATCHER = Family("nv_trt_llm_inflight_batcher_metrics", "gauge", "TRT LLM inflight_batcher-specific metrics",
                          "inflight_batcher_specific_metric",
                          ("total_context_tokens", "generation_requests", "micro_batch_id", "paused_requests"))
GENERAL = Family("nv_trt_llm_general_metrics", "gauge", "General TRT LLM metrics", "general_type",
                 ("timestamp", "iteration_counter"))
OUTPUT_LEN = Family("nv_llm_output_token_len", "histogram", "TRT LLM response metrics", "response_metric_type",
                    ("total_output_tokens",), TOKEN_LEN_BUCKETS)
INPUT_LEN = Family("nv_llm_input_token_len", "histogram", "TRT LLM response metrics", "response_metric_type",
                   ("total_input_tokens",), TOKEN_LEN_BUCKETS)
# in the backend's order; the stand-ins batch in flight, so the model-type family is the in-flight batcher's
FAMILIES = (REQUEST, RUNTIME_MEMORY, KV_CACHE, DISAGGREGATED, INFLIGHT_BATCHER, GENERAL, OUTPUT_LEN, INPUT_LEN)
DEFAULT_PERIOD_MS = 100  # the backend's stats_check_period_ms when the config leaves it unset

Key = tuple[str, str]  # (family name, category label value)


def readings(s: dict) -> dict[Key, float]:
    """Every gauge and counter of ``FAMILIES`` from an engine's ``stats()`` (``engine.loop.EngineLoop.stats``)."""
    active, scheduled, context = s["active"], s["scheduled"], s["context"]
    kv_max, kv_used = s["kv_blocks_max"], s["kv_blocks_used"]
    values = {
        REQUEST: (active, s["max_active"], scheduled, context, active - scheduled),
        RUNTIME_MEMORY: (s["runtime_cpu_bytes"], 0, 0),
        KV_CACHE: (kv_max, kv_max - kv_used, kv_used, s["kv_tokens_per_block"], s["kv_blocks_reused"],
                   kv_used / kv_max if kv_max else 0.0),
        DISAGGREGATED: (0, 0),
        INFLIGHT_BATCHER: (s["context_tokens"], scheduled - context, 0, 0),
        GENERAL: (int(s["iteration_time"] * 1e6), s["iterations"]),
    }
    return {(f.name, v): float(x) for f, xs in values.items() for v, x in zip(f.values, xs, strict=True)}


def period_ms(model_config: str | dict) -> int:
    """The config's ``stats_check_period_ms`` (Triton's JSON form of the config), or the backend's default when it
    is absent or not a number (its ``${...}`` placeholder)."""
    d = json.loads(model_config) if isinstance(model_config, str) else model_config
    raw = ((d.get("parameters") or {}).get("stats_check_period_ms") or {}).get("string_value", "")
    try:
        return max(1, int(raw))
    except ValueError:
        return DEFAULT_PERIOD_MS


class BackendMirror(GaugeMirror):
    """``GaugeMirror`` over ``readings``, plus the token-length histograms: ``request_ended`` (any thread) queues
    one request's counts, which the mirror's thread observes."""

    def __init__(self, read: Callable[[], dict], gauges: dict[Key, Any], histograms: dict[str, Any],
                 period_s: float, name: str = "backend-metrics", start: bool = True):
        self._ended: deque[tuple[int, int]] = deque()
        self._histograms = histograms
        super().__init__(lambda: readings(read()), gauges, period_s, name, start)

    def request_ended(self, input_tokens: int, output_tokens: int) -> None:
        self._ended.append((input_tokens, output_tokens))

    def sync(self) -> None:
        super().sync()
        while self._ended:
            i, o = self._ended.popleft()
            self._histograms[INPUT_LEN.name].observe(float(i))
            self._histograms[OUTPUT_LEN.name].observe(float(o))


def mirror(pb, service, args: dict, on=None) -> BackendMirror:
    """The families of ``FAMILIES`` for an engine stand-in, made with the Python backend's module ``pb`` and labelled
    as the backend labels them (``args``: what Triton passes to ``initialize``); ``service`` is its
    ``EngineService``, whose engine reports each request's end to the histograms. ``on``: the model's other
    ``GaugeMirror``, whose thread then makes these updates too (one thread for all of a model's metric round trips)."""
    labels = {"model": args["model_name"], "version": str(args["model_version"])}
    kinds = {"gauge": pb.MetricFamily.GAUGE, "counter": pb.MetricFamily.COUNTER,
             "histogram": pb.MetricFamily.HISTOGRAM}
    families = {f.name: pb.MetricFamily(f.name, f.help, kinds[f.kind]) for f in FAMILIES}
    gauges, histograms = {}, {}
    for f in FAMILIES:
        for v in f.values:
            metric_labels = labels | {f.label: v}
            if f.kind == "histogram":
                histograms[f.name] = families[f.name].Metric(labels=metric_labels, buckets=list(f.buckets))
            else:
                gauges[(f.name, v)] = families[f.name].Metric(labels=metric_labels)
    m = BackendMirror(service.stats, gauges, histograms, period_ms(args["model_config"]) / 1000.0,
                      name=f"{labels['model']}-backend-metrics", start=on is None)
    if on is not None:
        on.also(m.sync, m.period_s)
    m.families = families  # a family must outlive its metrics
    service.engine.on_request_end = m.request_ended
    return m
