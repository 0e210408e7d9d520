"""Per-request metrics worth scraping: latency histograms, token counters, outcomes by finish reason and by
error kind. The same names whatever the engine and whatever the path (the text front door, the OpenAI API).

Each request is recorded once, when it ends (``RequestOutcome``), never per token: the token path pays
nothing. What a request turns into is a pure function (``observations``); two sinks apply it:
``TritonRequestMetrics`` inside a Python-backend model (next to Triton's own series on the metrics port;
one thread owns the metric objects, which are not safe across threads, and every update is an IPC round
trip that thread makes), and ``PromRequestMetrics`` with prometheus_client in the launcher (the OpenAI API's
series, on the HTTP port's ``/metrics``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from ..errors import ZiyaError, kind_of

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0)
TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class MetricDef:
    name: str
    kind: str  # counter | histogram
    help: str
    buckets: tuple = ()
    label: str | None = None  # the one extra label, if any


REQUEST_METRICS = (
    MetricDef("ziya_time_to_first_token_seconds", "histogram", "arrival to the first text sent", LATENCY_BUCKETS),
    MetricDef("ziya_inter_token_latency_seconds", "histogram",
              "per request: (end-to-end - first token) / (output tokens - 1)", ITL_BUCKETS),
    MetricDef("ziya_e2e_request_latency_seconds", "histogram", "arrival to the final response", LATENCY_BUCKETS),
    MetricDef("ziya_request_prompt_tokens", "histogram", "prompt length in tokens", TOKEN_BUCKETS),
    MetricDef("ziya_request_generation_tokens", "histogram", "tokens generated per request", TOKEN_BUCKETS),
    MetricDef("ziya_prompt_tokens_total", "counter", "prompt tokens of the requests served"),
    MetricDef("ziya_generation_tokens_total", "counter", "tokens generated for the requests served"),
    MetricDef("ziya_prompt_cached_tokens_total", "counter",
              "prompt tokens whose KV came from the engine's prefix cache (KV-cache reuse)"),
    MetricDef("ziya_requests_total", "counter", "requests that ended with a result, by finish reason",
              label="finish_reason"),
    MetricDef("ziya_request_errors_total", "counter", "requests that ended without one, by kind", label="kind"),
)
ENGINE_QUEUE_TIME = MetricDef("ziya_engine_queue_time_seconds", "histogram",
                              "submitted to holding an engine slot (the engine stand-ins)", LATENCY_BUCKETS)
BY_NAME = {m.name: m for m in (*REQUEST_METRICS, ENGINE_QUEUE_TIME)}

ERROR_KINDS = ("invalid", "overload", "cancelled", "shutting_down", "server")


def error_kind(err: ZiyaError) -> str:
    """The ``kind`` label of a failed request: the one error table's (``errors.ERROR_TABLE``)."""
    return kind_of(err).metric


@dataclass(frozen=True)
class RequestOutcome:
    """How one request ended: a finish reason (stop, length, eos) or an error kind (``ERROR_KINDS``)."""

    e2e_s: float
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft_s: float | None = None
    finish_reason: str | None = None
    error: str | None = None
    cached_tokens: int = 0

    @classmethod
    def failed(cls, err: ZiyaError, e2e_s: float = 0.0, **kw) -> "RequestOutcome":
        return cls(e2e_s=e2e_s, error=error_kind(err), **kw)


Observation = tuple[str, str | None, float]  # (metric name, its extra label's value, value)


def observations(o: RequestOutcome) -> list[Observation]:
    """What one request adds to the metrics."""
    if o.error is not None or o.finish_reason == "cancelled":
        return [("ziya_request_errors_total", o.error or "cancelled", 1.0)]
    out: list[Observation] = [("ziya_requests_total", o.finish_reason or "stop", 1.0),
                              ("ziya_e2e_request_latency_seconds", None, o.e2e_s),
                              ("ziya_request_prompt_tokens", None, o.prompt_tokens),
                              ("ziya_request_generation_tokens", None, o.output_tokens),
                              ("ziya_prompt_tokens_total", None, o.prompt_tokens),
                              ("ziya_generation_tokens_total", None, o.output_tokens),
                              ("ziya_prompt_cached_tokens_total", None, o.cached_tokens)]
    if o.ttft_s is not None:
        out.append(("ziya_time_to_first_token_seconds", None, o.ttft_s))
        if o.output_tokens > 1:
            out.append(("ziya_inter_token_latency_seconds", None, (o.e2e_s - o.ttft_s) / (o.output_tokens - 1)))
    return out


class TritonRequestMetrics:
    """The metrics of ``defs`` inside a Python-backend model: ``record`` from any thread (it only queues);
    one thread creates the metric objects and applies the updates. ``pb`` is the adapter's
    ``triton_python_backend_utils``."""

    def __init__(self, pb, labels: dict[str, str], defs=REQUEST_METRICS, period_s: float = 0.05,
                 name: str = "request-metrics"):
        self._pb, self._labels, self.period_s = pb, dict(labels), period_s
        self._defs = {d.name: d for d in defs}
        self._families: dict = {}
        self._metrics: dict = {}
        self._queue: deque[Observation] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def record(self, outcome: RequestOutcome) -> None:
        self._queue.extend(observations(outcome))

    def observe(self, name: str, value: float) -> None:
        self._queue.append((name, None, value))

    def _run(self) -> None:
        kinds = {"counter": self._pb.MetricFamily.COUNTER, "histogram": self._pb.MetricFamily.HISTOGRAM}
        for d in self._defs.values():  # every series exists from the start, at 0
            self._families[d.name] = self._pb.MetricFamily(d.name, d.help, kinds[d.kind])
        for d in self._defs.values():
            if d.label is None:
                self._metric(d.name, None)
        while not self._stop.wait(self.period_s):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        while self._queue:
            name, label, value = self._queue.popleft()
            try:
                m = self._metric(name, label)
                (m.observe if self._defs[name].kind == "histogram" else m.increment)(value)
            except Exception:  # a metric must never fail a request
                log.debug("metric %s not updated", name, exc_info=True)

    def _metric(self, name: str, label: str | None):
        key = (name, label)
        if key not in self._metrics:
            d = self._defs[name]
            labels = self._labels | ({d.label: label} if d.label else {})
            fam = self._families[name]
            self._metrics[key] = fam.Metric(labels=labels, buckets=list(d.buckets)) if d.kind == "histogram" \
                else fam.Metric(labels=labels)
        return self._metrics[key]

    def close(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)


class PromRequestMetrics:
    """The same series with prometheus_client (thread-safe), for code outside Triton (the OpenAI API)."""

    def __init__(self, labels: dict[str, str], registry=None):
        import prometheus_client as pc

        pc.disable_created_metrics()  # no *_created series beside each (Triton's exposition has none either)
        self.registry = registry or pc.CollectorRegistry()
        self._labels = dict(labels)
        self._m = {}
        for d in REQUEST_METRICS:
            names = [*self._labels, *([d.label] if d.label else [])]
            base = d.name.removesuffix("_total")  # prometheus_client adds _total to counters itself
            self._m[d.name] = (pc.Histogram(d.name, d.help, names, buckets=d.buckets, registry=self.registry)
                               if d.kind == "histogram" else pc.Counter(base, d.help, names, registry=self.registry))

    def record(self, outcome: RequestOutcome) -> None:
        for name, label, value in observations(outcome):
            m = self._m[name].labels(**self._labels, **({BY_NAME[name].label: label} if label is not None else {}))
            (m.observe if BY_NAME[name].kind == "histogram" else m.inc)(value)

    def exposition(self) -> bytes:
        import prometheus_client as pc

        return pc.generate_latest(self.registry)


RecordFn = Callable[[RequestOutcome], None]
