"""The engine stand-ins' request lifecycle without a server: a real synthetic engine, fake responders
(Triton's response senders exist only inside a Python-backend stub)."""

import time

import pytest

from tests.polling import wait_until
from tests.ziya_trt.serving.triton.test_frontdoor_service import Responder
from ziya_trt.engine.request import EngineLimits, EngineRequest
from ziya_trt.engine.synthetic import SyntheticEngine, synthetic_tokens
from ziya_trt.errors import InvalidRequestError, ServerOverloadedError
from ziya_trt.serving.triton.engine_service import EngineService
from ziya_trt.wire.arrays import engine_inputs, stop_request_inputs


@pytest.fixture
def service():
    eng = SyntheticEngine(EngineLimits(max_slots=2, max_queue=1, vocab_size=100), tokens_per_s=200.0,
                          first_token_s=0.0, skip_ids=frozenset())
    svc = EngineService(eng, name="synthetic", send_threads=2, cancel_check_s=0.005, drain_s=1.0)
    yield svc
    svc.finalize()


def request(n, ids=(20, 21, 22), streaming=True):
    return engine_inputs(EngineRequest(input_ids=list(ids), max_new_tokens=n, streaming=streaming))


def tokens(r):
    return [t for o, _, _ in r.sent if o for t in o["output_ids"].reshape(-1).tolist()]


def test_a_request_streams_only_the_outputs_asked_for(service):
    r = Responder()
    service.start(r, lambda: request(12), "a", {"output_ids", "sequence_length"})
    assert r.done.wait(5)
    assert tokens(r) == synthetic_tokens([20, 21, 22], 12) and len(r.finals()) == 1
    assert all(set(o) == {"output_ids", "sequence_length"} for o, _, _ in r.sent)
    whole = Responder()
    service.start(whole, lambda: request(5, streaming=False), "b")
    assert whole.done.wait(5) and len(whole.sent) == 1 and whole.sent[0][0]["num_output_tokens"].item() == 5


def test_each_streamed_response_has_every_log_probability_so_far_as_the_backend_sends_them(service):
    """contracts/log-probs.json: output_ids has the new tokens, output_log_probs all of them so far (the synthetic
    engine's are 0.0); cum_log_probs is their sum; a request that did not set return_log_probs gets neither."""
    asked = {"output_ids", "sequence_length", "output_log_probs", "cum_log_probs"}
    r = Responder()
    service.start(r, lambda: engine_inputs(EngineRequest(input_ids=[20, 21, 22], max_new_tokens=12, streaming=True,
                                                         return_log_probs=True)), "lp", asked)
    assert r.done.wait(5)
    seen = 0
    for o, _, _ in r.sent:
        if o is None:
            continue
        seen += o["output_ids"].shape[-1]
        assert o["output_log_probs"].shape == (1, 1, seen) and o["cum_log_probs"].tolist() == [[0.0]]
    assert seen == 12
    plain = Responder()
    service.start(plain, lambda: request(4), "plain", asked)
    assert plain.done.wait(5)
    assert all(set(o) == {"output_ids", "sequence_length"} for o, _, _ in plain.sent if o)


def test_a_stop_request_cancels_the_request_with_its_id(service):
    r = Responder()
    service.start(r, lambda: request(1000), "victim")
    assert wait_until(lambda: r.sent)
    stop = Responder()
    service.start(stop, stop_request_inputs, "victim")
    assert stop.sent == [(None, None, True)]  # a bare final, as TensorRT-LLM answers a stop
    assert r.done.wait(5) and len(tokens(r)) < 1000
    assert wait_until(lambda: service.stats()["active"] == 0) and service.stats()["cancelled"] == 1


def test_a_cancelled_client_frees_its_slot(service):
    r = Responder()
    service.start(r, lambda: request(1000), "c")
    assert wait_until(lambda: r.sent)
    r.cancelled = True
    assert wait_until(lambda: service.stats()["active"] == 0)


def test_bad_input_and_overload_are_typed_errors(service):
    bad = request(4)
    bad["input_lengths"][0, 0] = 7
    r = Responder()
    service.start(r, lambda: bad, "bad")
    assert isinstance(r.sent[0][1], InvalidRequestError) and "input_lengths" in r.sent[0][1].message
    running = [Responder() for _ in range(3)]  # 2 slots + 1 queued
    for i, x in enumerate(running):
        service.start(x, lambda: request(1000), f"run{i}")
    over = Responder()
    service.start(over, lambda: request(4), "over")
    assert over.done.wait(5) and isinstance(over.sent[0][1], ServerOverloadedError)
    for i in range(3):
        service.start(Responder(), stop_request_inputs, f"run{i}")
    time.sleep(0.05)


def test_draining_stops_admitting_and_the_deadline_fails_what_is_left(tmp_path):
    from ziya_trt.errors import ServerShuttingDownError
    from ziya_trt.serving.drain import drain_file, start_drain

    eng = SyntheticEngine(EngineLimits(max_slots=2, max_queue=1, vocab_size=100), tokens_per_s=50.0,
                          first_token_s=0.0, skip_ids=frozenset())
    svc = EngineService(eng, name="synthetic", send_threads=2, cancel_check_s=0.005, drain_path=drain_file(tmp_path))
    try:
        running = Responder()
        svc.start(running, lambda: request(1000), "long")
        assert wait_until(lambda: running.sent)
        start_drain(tmp_path, time.time() + 0.3)
        assert wait_until(lambda: svc.drain.draining)
        late = Responder()
        svc.start(late, lambda: request(4), "late")
        assert late.done.wait(3) and isinstance(late.sent[0][1], ServerShuttingDownError)
        assert running.done.wait(3) and isinstance(running.finals()[0][1], ServerShuttingDownError)
    finally:
        svc.finalize()


def test_num_return_sequences_answers_one_sequence_per_response_with_its_index(service):
    """contracts/num-return-sequences.json: each response is one sequence's (output_ids [1, 1, n]) with its
    sequence_index [1, 1]; each sequence's log probabilities so far are its own; one final flag, at the end; a request
    of one sequence never gets sequence_index, even when it asks."""
    from tests.contracts import facts

    declared = {o["name"]: o for o in facts()["triton_models"]["models"]["tensorrt_llm"]["outputs"]}
    asked = {"output_ids", "sequence_length", "sequence_index", "output_log_probs", "cum_log_probs"}
    r = Responder()
    service.start(r, lambda: engine_inputs(EngineRequest(input_ids=[20, 21, 22], max_new_tokens=6, streaming=True,
                                                         return_log_probs=True, num_return_sequences=2)), "n2", asked)
    assert r.done.wait(5)
    seen: dict[int, int] = {}
    outs = [o for o, _, _ in r.sent if o is not None]
    for o in outs:
        assert declared["sequence_index"]["data_type"] == "TYPE_INT32" and o["sequence_index"].dtype.name == "int32"
        assert o["sequence_index"].shape == (1, 1) and o["output_ids"].shape[:2] == (1, 1)
        i = int(o["sequence_index"][0, 0])
        seen[i] = seen.get(i, 0) + o["output_ids"].shape[-1]
        assert o["output_log_probs"].shape == (1, 1, seen[i])
    assert seen == {0: 6, 1: 6}
    assert [f for _, _, f in r.sent].count(True) == 1 and r.sent[-1][2]
    one = Responder()
    service.start(one, lambda: request(3), "one", asked)
    assert one.done.wait(5)
    assert all("sequence_index" not in o for o, _, _ in one.sent if o)


def test_a_stop_request_ends_every_sequence(service):
    r = Responder()
    service.start(r, lambda: engine_inputs(EngineRequest(input_ids=[20, 21], max_new_tokens=1000, streaming=True,
                                                         num_return_sequences=2)), "both")
    assert wait_until(lambda: r.sent)
    stop = Responder()
    service.start(stop, stop_request_inputs, "both")
    assert r.done.wait(5)
    assert wait_until(lambda: service.stats()["active"] == 0)
