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


def test_stats_give_the_executors_figures_of_the_latest_step():
    """Two requests in their context phase (no token yet), then generating; the KV blocks their tokens fill; each
    request's end reported once with its counts; the loop's passes counted."""
    from tests.polling import wait_until

    ended = []
    eng = SyntheticEngine(EngineLimits(max_slots=3, max_queue=2, max_input_len=50, max_seq_len=100, vocab_size=100),
                          tokens_per_s=50.0, first_token_s=0.4, skip_ids=frozenset(), block_tokens=8)
    eng.on_request_end = lambda i, o: ended.append((i, o))
    try:
        s = eng.stats()
        assert (s["active"], s["scheduled"], s["context"], s["kv_blocks_used"]) == (0, 0, 0, 0)
        assert (s["max_active"], s["kv_tokens_per_block"], s["kv_blocks_max"]) == (3, 8, 3 * 13)
        for i, n in enumerate((10, 17)):
            eng.submit(EngineRequest(input_ids=list(range(20, 20 + n)), max_new_tokens=60, id=f"r{i}"), lambda o: None)
        assert wait_until(lambda: eng.stats()["active"] == 2)
        s = eng.stats()
        assert (s["scheduled"], s["context"], s["context_tokens"]) == (2, 2, 27)
        assert s["kv_blocks_used"] == 2 + 3 and s["iterations"] > 0 and s["iteration_time"] > 0
        assert wait_until(lambda: eng.stats()["context"] == 0)
        s = eng.stats()
        assert (s["active"], s["scheduled"], s["context_tokens"]) == (2, 2, 0)
        assert s["kv_blocks_used"] >= 5 and s["runtime_cpu_bytes"] == s["kv_blocks_reused"] == 0
        eng.cancel("r0")
        assert wait_until(lambda: eng.stats()["active"] == 1)
        assert len(ended) == 1 and ended[0][0] == 10 and ended[0][1] >= 1
    finally:
        eng.shutdown(0.1)
    assert [i for i, _ in ended] == [10, 17]
