"""The synthetic engine's two schedules: tokens at the configured rate either way; under ``step`` every
running request's token comes out in the same step, as an in-flight batching engine emits them."""

import threading
import time

import pytest

from ziya_trt.engine.request import EngineLimits, EngineRequest
from ziya_trt.engine.synthetic import SyntheticEngine, due_time


def test_due_time_stream_is_the_time_itself():
    assert due_time(12.3456, 0.02, "stream", 0.0) == 12.3456


@pytest.mark.parametrize("t, expected", [(0.0, 0.0), (0.001, 0.02), (0.0199, 0.02), (0.02, 0.02), (0.0201, 0.04),
                                         (1.0, 1.0), (1.005, 1.02)])
def test_due_time_step_is_the_first_step_not_before(t, expected):
    assert due_time(100.0 + t, 0.02, "step", 100.0) == pytest.approx(100.0 + expected, abs=1e-9)


def test_a_due_time_on_a_step_stays_there_over_many_steps():
    """The engine schedules the next token one period after the last: it must not slip a step each time."""
    t = 5.0
    for _ in range(10_000):
        t = due_time(t + 0.02, 0.02, "step", 5.0)
    assert t == pytest.approx(5.0 + 10_000 * 0.02, abs=1e-6)


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule"):
        SyntheticEngine(EngineLimits(vocab_size=100), schedule="lockstep")


def _emission_times(schedule: str, n_requests: int = 3, tokens: int = 6, gap_s: float = 0.007):
    """Submit requests ``gap_s`` apart (10 ms steps); return each request's output times."""
    eng = SyntheticEngine(EngineLimits(max_slots=8, vocab_size=100), tokens_per_s=100.0, first_token_s=0.005,
                          schedule=schedule)
    times: dict[str, list[float]] = {}
    done = threading.Semaphore(0)

    def sink_for(rid):
        def sink(out):
            times[rid].extend([time.monotonic()] * len(out.tokens))
            if out.final:
                done.release()
        return sink

    try:
        for i in range(n_requests):
            rid = f"r{i}"
            times[rid] = []
            eng.submit(EngineRequest(input_ids=[20, 21, 22], max_new_tokens=tokens, min_tokens=tokens, id=rid,
                                     streaming=True), sink_for(rid))
            time.sleep(gap_s)
        for _ in range(n_requests):
            assert done.acquire(timeout=10)
    finally:
        eng.shutdown(0.1)
    return times


def _bursts(times: dict[str, list[float]], within_s: float = 0.001) -> int:
    """How many separate moments the engine emitted at (outputs less than ``within_s`` apart are one)."""
    ts = sorted(t for v in times.values() for t in v)
    return 1 + sum(1 for a, b in zip(ts, ts[1:]) if b - a >= within_s)


def test_step_schedule_emits_every_running_request_together():
    """3 requests 7 ms apart, 6 tokens each: on one step clock that is at most 6 + 2 steps, not 18 moments."""
    times = _emission_times("step")
    assert all(len(ts) == 6 for ts in times.values()), times
    assert _bursts(times) <= 8, times


def test_stream_schedule_keeps_each_request_on_its_own_clock():
    times = _emission_times("stream")
    for rid, ts in times.items():
        assert len(ts) == 6, rid
        gaps = [b - a for a, b in zip(ts, ts[1:])]
        assert sorted(gaps)[len(gaps) // 2] == pytest.approx(0.01, abs=0.003), rid  # the rate, per request
    # requests 7 ms apart on 10 ms clocks of their own: more moments than one shared step clock gives (at most 8, the
    # test above); how many more depends on how late a loaded machine wakes the loop, so no more is asserted
    assert _bursts(times) > 8, times


def test_the_schedule_reaches_the_engine_from_the_serve_config(tiny_ckpt):
    from ziya_trt.engine.factory import build_engine
    from ziya_trt.serving.config import ServeConfig

    for schedule in ("stream", "step"):
        eng = build_engine(ServeConfig(engine="synthetic", tokenizer_dir=tiny_ckpt, synthetic_schedule=schedule), "s")
        try:
            assert eng.schedule == schedule
        finally:
            eng.shutdown(0.1)
