"""The engine loop's admission limit (synthetic engine, no server)."""

import time

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


@pytest.mark.parametrize("kw, field", [
    (dict(temperature=float("inf")), "temperature"),
    (dict(temperature=1e-40), "temperature"),
    (dict(bad_words=[[-1]]), "bad_words_list"),  # -1 would ban the last token of the vocabulary
    (dict(bad_words=[[100]]), "bad_words_list"),
    (dict(stop_words=[[5]] * 65), "stop_words_list"),
    (dict(repetition_penalty=float("inf")), "repetition_penalty"),
    (dict(presence_penalty=3.0), "presence_penalty"),
])
def test_the_engine_refuses_what_it_cannot_do(kw, field):
    from ziya_trt.engine.request import validate
    from ziya_trt.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError) as ei:
        validate(EngineRequest(input_ids=[20, 21], max_new_tokens=4, **kw), EngineLimits(vocab_size=100))
    assert ei.value.field == field


def test_an_engine_fault_fails_only_its_own_request():
    """A step that raises for one request (here: its sampler) fails that request; the others finish."""
    from ziya_trt.engine.loop import EngineLoop

    class Faulty(EngineLoop):
        def _admit(self, live):
            if live.req.id == "bad":
                raise RuntimeError("boom")
            self.append_token(live, 20)

        def _step(self, active):
            for live in active:
                if live.req.id in self._active:
                    self._guard(live, lambda lv: self.append_token(lv, 21))

    eng = Faulty(EngineLimits(max_slots=4, max_queue=4, vocab_size=100))
    outs = {}
    try:
        for rid in ("a", "bad", "b"):
            eng.submit(EngineRequest(input_ids=[20], max_new_tokens=5, id=rid, streaming=False),
                       lambda o, rid=rid: outs.setdefault(rid, o))
        deadline = time.monotonic() + 5
        while len(outs) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert outs["bad"].error is not None and "RuntimeError" in outs["bad"].error.message
        assert outs["a"].num_output_tokens == outs["b"].num_output_tokens == 5 and outs["a"].error is None
    finally:
        eng.shutdown(0.1)
