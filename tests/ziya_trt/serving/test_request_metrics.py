"""What a request adds to the metrics, and the two sinks that apply it (a fake Python-backend module stands in
for Triton's, which exists only inside a stub; the real one is scraped in tests/model_repo/test_metrics.py)."""

import time

import pytest

from ziya_trt.errors import InvalidRequestError, ServerError, ServerOverloadedError, ServerShuttingDownError
from ziya_trt.serving.request_metrics import (
    REQUEST_METRICS,
    PromRequestMetrics,
    RequestOutcome,
    TritonRequestMetrics,
    observations,
)


def test_a_finished_request_observes_its_latencies_and_tokens():
    obs = {(n, label): v for n, label, v in observations(RequestOutcome(2.0, 30, 11, 0.5, "length", cached_tokens=16))}
    assert obs[("ziya_requests_total", "length")] == 1.0
    assert obs[("ziya_time_to_first_token_seconds", None)] == 0.5
    assert obs[("ziya_inter_token_latency_seconds", None)] == pytest.approx(1.5 / 10)
    assert obs[("ziya_e2e_request_latency_seconds", None)] == 2.0
    assert obs[("ziya_prompt_tokens_total", None)] == 30 and obs[("ziya_generation_tokens_total", None)] == 11
    assert obs[("ziya_prompt_cached_tokens_total", None)] == 16


@pytest.mark.parametrize("err, kind", [(InvalidRequestError("x"), "invalid"), (ServerOverloadedError("x"), "overload"),
                                       (ServerShuttingDownError("x"), "shutting_down"), (ServerError("x"), "server")])
def test_errors_are_counted_by_kind_and_nothing_else(err, kind):
    assert observations(RequestOutcome.failed(err)) == [("ziya_request_errors_total", kind, 1.0)]


def test_a_cancelled_request_is_an_error_of_kind_cancelled():
    assert observations(RequestOutcome(1.0, 3, 2, 0.1, "cancelled")) == [("ziya_request_errors_total", "cancelled", 1.0)]


class FakePb:
    """Stands in for triton_python_backend_utils' metric API; records which thread touched what."""

    class MetricFamily:
        COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

        def __init__(self, name, help, kind):
            self.name, self.kind, self.metrics = name, kind, []

        def Metric(self, labels, buckets=None):
            m = FakeMetric(self.name, labels, buckets)
            self.metrics.append(m)
            return m


class FakeMetric:
    def __init__(self, name, labels, buckets):
        self.name, self.labels, self.buckets, self.values, self.threads = name, labels, buckets, [], set()

    def observe(self, v):
        import threading

        self.values.append(v)
        self.threads.add(threading.get_ident())

    increment = observe


def test_the_triton_sink_applies_everything_on_one_thread_and_creates_every_series():
    sink = TritonRequestMetrics(FakePb, {"model": "ziya"}, period_s=0.005)
    try:
        sink.record(RequestOutcome(1.0, 10, 5, 0.2, "stop"))
        sink.record(RequestOutcome.failed(ServerOverloadedError("full")))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(sink._metrics) < len(REQUEST_METRICS):
            time.sleep(0.01)
    finally:
        sink.close()
    by = {k: m for k, m in sink._metrics.items()}
    assert by[("ziya_requests_total", "stop")].values == [1.0] and by[("ziya_requests_total", "stop")].labels == {
        "model": "ziya", "finish_reason": "stop"}
    assert by[("ziya_request_errors_total", "overload")].values == [1.0]
    assert by[("ziya_time_to_first_token_seconds", None)].buckets[0] == 0.005
    threads = set().union(*(m.threads for m in by.values()))
    assert len(threads) == 1  # one thread owns the metric objects


def test_the_prometheus_sink_exposes_the_same_names():
    sink = PromRequestMetrics({"model": "ziya", "api": "openai"})
    sink.record(RequestOutcome(1.0, 10, 5, 0.2, "stop"))
    sink.record(RequestOutcome.failed(InvalidRequestError("x")))
    text = sink.exposition().decode()
    for m in REQUEST_METRICS:
        assert f"# TYPE {m.name} {m.kind}" in text, m.name
    assert "_created" not in text
    assert 'ziya_requests_total{api="openai",finish_reason="stop",model="ziya"} 1.0' in text
    assert 'ziya_request_errors_total{api="openai",kind="invalid",model="ziya"} 1.0' in text
    assert 'ziya_time_to_first_token_seconds_count{api="openai",model="ziya"} 1.0' in text
