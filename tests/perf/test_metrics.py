"""The pure metric functions on made-up timings."""

import pytest

from perf.load import arrival_gaps
from perf.metrics import RequestRecord, Slo, calculate_metrics, percentile


def rec(i, send, first, last, n, **kw):
    gap = (last - first) / (n - 1) if n > 1 else 0
    return RequestRecord(index=i, t_send=send, t_first=first, t_last=last, output_tokens=n,
                         chunk_times=[first + k * gap for k in range(n)], **kw)


def test_per_request_definitions():
    r = rec(0, 1.0, 1.1, 2.1, 11)
    assert r.ttft == pytest.approx(0.1) and r.e2e == pytest.approx(1.1)
    assert r.itl == pytest.approx(1.0 / 10)  # (E2E - TTFT) / (tokens - 1)
    assert rec(1, 0, 0.1, 0.1, 1).itl is None


def test_summary_throughput_and_percentiles():
    recs = [rec(i, i * 0.5, i * 0.5 + 0.1 * (i + 1), i * 0.5 + 1.0, 10) for i in range(4)]
    s = calculate_metrics(recs)
    assert s.requests == s.completed == 4 and s.errors == 0
    # first send 0.0 -> last response 2.5
    assert s.duration_s == pytest.approx(2.5)
    assert s.output_token_throughput == pytest.approx(40 / 2.5) and s.request_throughput == pytest.approx(4 / 2.5)
    assert s.ttft.p50 == pytest.approx(0.25) and s.ttft.max == pytest.approx(0.4) and s.ttft.mean == pytest.approx(0.25)
    assert s.ttft.p99 == pytest.approx(0.397)


def test_errors_are_counted_not_dropped_and_warmup_is_excluded():
    recs = [rec(0, 0, 0.1, 1.0, 5), RequestRecord(index=1, t_send=0.2, error="boom", error_type="ServerError"),
            RequestRecord(index=2, t_send=0.3, error="full", error_type="ServerOverloadedError"),
            rec(-1, 0, 0.01, 9.0, 5, warmup=True)]
    s = calculate_metrics(recs)
    assert (s.requests, s.completed, s.errors) == (3, 1, 2)
    assert s.error_types == {"ServerError": 1, "ServerOverloadedError": 1}
    assert s.duration_s == pytest.approx(1.0)  # the warm-up's late finish does not count


def test_goodput_under_slos():
    recs = [rec(0, 0, 0.05, 1.05, 11), rec(1, 0, 0.5, 1.5, 11), rec(2, 0, 0.05, 3.05, 11)]
    s = calculate_metrics(recs, Slo(ttft_ms=100, tpot_ms=150))
    # request 0 meets both; 1 misses TTFT; 2 misses TPOT (300 ms/token)
    assert s.goodput == pytest.approx(1 / s.duration_s)
    assert calculate_metrics(recs).goodput is None


def test_percentile_matches_numpy():
    import numpy as np

    xs = sorted([3.0, 1.0, 4.0, 1.5, 9.0, 2.6])
    for q in (0, 50, 90, 99, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_arrivals_have_the_requested_rate_and_repeat():
    g = arrival_gaps(20000, rate=10.0, burstiness=1.0, seed=3)
    assert sum(g) / len(g) == pytest.approx(0.1, rel=0.03)
    assert g[:5] == arrival_gaps(5, 10.0, 1.0, 3)
    bursty = arrival_gaps(20000, 10.0, 0.25, 3)
    var = lambda xs: sum((x - sum(xs) / len(xs)) ** 2 for x in xs) / len(xs)  # noqa: E731
    assert sum(bursty) / len(bursty) == pytest.approx(0.1, rel=0.05) and var(bursty) > 3 * var(g)


def test_every_request_ends_as_a_record_whatever_it_raises():
    """A client whose odd requests fail with an exception that is not the project's (a broken event, say):
    every request is still a record, its error counted by type, and the run goes on."""
    import asyncio

    from perf.load import LoadConfig, run_load
    from perf.workload import Item

    class Stream:
        def __init__(self, i):
            self.i, self.result = i, None

        async def __aiter__(self):
            yield "a"
            if self.i % 2:
                raise ValueError("bad SSE line")
            yield "b"

        async def cancel(self):
            pass

    class Client:
        n = 0

        def stream_chat_raw(self, prompt, **kw):
            Client.n += 1
            return Stream(Client.n)

    records = asyncio.run(run_load(Client(), [Item("x", 2)], LoadConfig(concurrency=2, num_requests=8, warmup=0)))
    s = calculate_metrics(records)
    assert len(records) == 8 and (s.completed, s.errors) == (4, 4) and s.error_types == {"ValueError": 4}
