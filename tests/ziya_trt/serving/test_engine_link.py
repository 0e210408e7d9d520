"""The front door's engine link, against a real tritonserver (synthetic engine), from this process."""

import threading
import time
import uuid

import pytest

from ziya_trt.engine.request import EngineRequest
from ziya_trt.engine.synthetic import synthetic_tokens
from ziya_trt.serving.engine_link import EngineLink, LinkClosedError
from ziya_trt.errors import from_wire
from ziya_trt.serving.process.server import free_port
from ziya_trt.wire.tensors import FRONT_DOOR_ENGINE_OUTPUTS
from ziya_trt.wire.arrays import engine_inputs, stop_request_inputs


class Events:
    """What one call's callback saw, in order; ``done`` is set by the final event."""

    def __init__(self):
        self.tokens, self.errors, self.finals, self.after_final = [], [], 0, 0
        self.done = threading.Event()

    def __call__(self, outputs, error, final):
        if self.done.is_set():
            self.after_final += 1
        ids = outputs.get("output_ids")
        if ids is not None:
            self.tokens += ids.reshape(-1).tolist()
        if error is not None:
            self.errors.append(error)
        if final:
            self.finals += 1
            self.done.set()


def arrays(ids, n):
    return engine_inputs(EngineRequest(input_ids=ids, max_new_tokens=n, streaming=True))


@pytest.fixture
def link(syn_server):
    lk = EngineLink(syn_server.grpc_url, "synthetic", FRONT_DOOR_ENGINE_OUTPUTS, name="test-link")
    yield lk
    lk.close()


def test_concurrent_calls_each_get_their_own_tokens_in_order_and_one_final(link):
    calls = {}
    for i in range(24):
        ids = [20 + i, 60 + i, 100 + i]  # no special ids (the engine skips them)
        ev = calls[uuid.uuid4().hex] = (ids, 10 + i, Events())
        link.submit(next(reversed(calls)), arrays(ids, 10 + i), ev[2])
    for rid, (ids, n, ev) in calls.items():
        assert ev.done.wait(20), rid
        assert ev.tokens == synthetic_tokens(ids, n) and ev.errors == []
    time.sleep(0.2)
    assert all(ev.finals == 1 and ev.after_final == 0 for _, _, ev in calls.values())
    assert link.in_flight() == 0 and link.counters["calls"] == 24


def test_stop_ends_a_call_early_and_is_sent_once(slow_server):
    link = EngineLink(slow_server.grpc_url, "synthetic", FRONT_DOOR_ENGINE_OUTPUTS)
    try:
        ev, rid = Events(), uuid.uuid4().hex
        link.submit(rid, arrays([25, 26, 27], 400), ev)  # 20 s at 20 tok/s
        deadline = time.monotonic() + 10
        while not ev.tokens and time.monotonic() < deadline:
            time.sleep(0.01)
        assert link.stop(rid, stop_request_inputs()) is True
        assert link.stop(rid, stop_request_inputs()) is False
        assert ev.done.wait(5)
        time.sleep(0.3)  # both finals are in: nothing arrives after the one final event
        assert ev.errors == [] and ev.finals == 1 and ev.after_final == 0
        assert 0 < len(ev.tokens) < 400 and link.in_flight() == 0
        assert link.stop(rid, stop_request_inputs()) is False  # the call is over
    finally:
        link.close()


def test_an_engine_error_reaches_only_its_own_call(link):
    bad = arrays([25, 26, 27], 5)
    bad["input_lengths"][0, 0] = 2
    good, wrong = Events(), Events()
    link.submit("good", arrays([25, 26, 27], 20), good)
    link.submit("bad", bad, wrong)
    assert wrong.done.wait(10) and good.done.wait(10)
    assert len(wrong.errors) == 1 and from_wire(wrong.errors[0]).code == "invalid_request"
    assert good.errors == [] and good.tokens == synthetic_tokens([25, 26, 27], 20)


def test_an_unknown_model_is_an_error_event_not_a_hang(syn_server):
    link = EngineLink(syn_server.grpc_url, "no_such_model")
    try:
        ev = Events()
        link.submit("x", arrays([25, 26], 3), ev)
        assert ev.done.wait(10) and "no_such_model" in ev.errors[0]
    finally:
        link.close()


def test_an_unreachable_server_fails_the_call():
    link = EngineLink(f"127.0.0.1:{free_port()}", "synthetic")
    try:
        ev = Events()
        link.submit("x", arrays([25, 26], 3), ev)
        assert ev.done.wait(20)
        assert ev.finals == 1 and "failed" in ev.errors[0] and link.in_flight() == 0
    finally:
        link.close()


def test_close_ends_open_calls_and_refuses_new_ones(slow_server):
    link = EngineLink(slow_server.grpc_url, "synthetic")
    ev = Events()
    link.submit("long", arrays([25, 26, 27], 400), ev)
    with pytest.raises(ValueError, match="already in flight"):
        link.submit("long", arrays([25, 26, 27], 4), Events())
    time.sleep(0.3)
    link.close()
    assert ev.done.wait(5) and ev.finals == 1 and ev.errors
    with pytest.raises(LinkClosedError):
        link.submit("later", arrays([25, 26], 3), Events())


def test_a_bad_address_is_refused_at_once():
    with pytest.raises(ValueError, match="host:port"):
        EngineLink("localhost", "synthetic")


def test_calls_submitted_the_moment_the_link_starts_are_not_lost(syn_server):
    """The first submit starts the link's loop; calls made right then must find it ready."""
    for _ in range(5):
        link = EngineLink(syn_server.grpc_url, "synthetic")
        try:
            evs = [Events() for _ in range(4)]
            threads = [threading.Thread(target=link.submit, args=(uuid.uuid4().hex, arrays([25, 26], 2), ev))
                       for ev in evs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert all(ev.done.wait(10) and not ev.errors for ev in evs)
        finally:
            link.close()
            link.close()  # idempotent


def test_a_stop_the_server_refuses_still_ends_the_call(link, syn_server):
    """Triton refuses a stop when the engine model's queue is full (the template bounds it with max_queue_size): the
    call must not go on generating. Here the engine refuses the stop itself (a stop with no stop flag and no ids is
    an invalid request), as deterministic a refusal: the link then cancels the call, and the engine frees the slot."""
    from tests.triton_helpers import wait_metric
    from ziya_trt.serving.triton.gauges import METRIC_ACTIVE

    ev, rid = Events(), uuid.uuid4().hex
    link.submit(rid, arrays([20, 21, 22], 3000), ev)
    deadline = time.monotonic() + 10
    while not ev.tokens and time.monotonic() < deadline:  # the engine has answered: a stop goes on its own stream
        time.sleep(0.01)
    assert ev.tokens
    refused_stop = {k: v for k, v in stop_request_inputs().items() if k != "stop"}
    refused_stop.pop("input_ids")
    assert link.stop(rid, refused_stop)
    assert ev.done.wait(10), "the call went on after its stop was refused"
    active, _ = wait_metric(syn_server, METRIC_ACTIVE, "synthetic", lambda v: v == 0, timeout_s=10)
    assert active == 0 and len(ev.tokens) < 3000
