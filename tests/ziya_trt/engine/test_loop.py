"""The engine loop's admission limit (synthetic engine, no server)."""

import pytest

from ziya_trt.engine.request import EngineLimits, EngineRequest
from ziya_trt.engine.synthetic import SyntheticEngine
from ziya_trt.errors import ServerOverloadedError


@pytest.mark.parametrize("burst", [4, 6, 12])
def test_admission_is_exactly_slots_plus_queue_even_in_a_burst(burst):
    """Requests that arrive before the loop moves them into slots still count: 2 slots + 1 queued = 3."""
    eng = SyntheticEngine(EngineLimits(max_slots=2, max_queue=1, vocab_size=100), tokens_per_s=1.0)
    try:
        accepted, refused = 0, 0
        for i in range(burst):
            try:
                eng.submit(EngineRequest(input_ids=[20, 21], max_new_tokens=50, id=f"r{i}"), lambda out: None)
                accepted += 1
            except ServerOverloadedError:
                refused += 1
        assert (accepted, refused) == (3, burst - 3)
    finally:
        eng.shutdown(0.1)
