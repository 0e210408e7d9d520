"""The front door's request lifecycle without a server: the responder and the engine link are fakes
(Triton's response senders exist only inside a Python-backend stub; the link is tested against a real
server in test_engine_link.py, and the whole path in tests/model_repo and tests/reliability)."""

import threading
import time

import numpy as np
import pytest

from tests.polling import wait_until
from ziya_trt.errors import InvalidRequestError, ServerError, ServerOverloadedError
from ziya_trt.serving.frontdoor import FrontDoor, FrontDoorLimits
from ziya_trt.serving.triton.frontdoor_service import FrontDoorService

ANSWER = "北京是中国的首都。 The capital is Beijing!"


class Responder:
    def __init__(self, fail=False):
        self.sent, self.cancelled, self.fail = [], False, fail
        self.done = threading.Event()

    def send(self, outputs=None, error=None, final=False):
        if self.fail:
            self.done.set()
            raise RuntimeError("client gone")
        self.sent.append((outputs, error, final))
        if final:
            self.done.set()

    def is_cancelled(self):
        return self.cancelled

    def text(self):
        return "".join(o["text_output"][0].decode() for o, _, _ in self.sent if o)

    def finals(self):
        return [s for s in self.sent if s[2]]


class Link:
    """Records engine calls; the test plays the engine by calling ``emit``."""

    def __init__(self, fail_submit=False):
        self.calls, self.stops, self.closed, self.fail_submit = {}, [], False, fail_submit

    def submit(self, request_id, arrays, on_event):
        if self.fail_submit:
            raise ConnectionRefusedError("no server")
        self.calls[request_id] = (arrays, on_event)

    def stop(self, request_id, arrays):
        assert arrays["stop"].item() is True
        self.stops.append(request_id)
        return True

    def close(self):
        self.closed = True

    def emit(self, rid, tokens=(), final=False, error=None):
        self.calls[rid][1]({"output_ids": np.asarray([[tokens]], dtype=np.int32)} if tokens else {}, error, final)

    def only(self):
        (rid,) = self.calls
        return rid


@pytest.fixture
def make(tok):
    services = []

    def make(max_inflight=4, link=None, drain_s=1.0):
        svc = FrontDoorService(FrontDoor(tok, FrontDoorLimits(256, 512)), link or Link(), max_inflight=max_inflight,
                               engine_name="synthetic", send_threads=2, cancel_check_s=0.005, drain_s=drain_s)
        services.append(svc)
        return svc

    yield make
    for s in services:
        s.link.close()
        s.outbox.close(timeout_s=0.5)


def inputs(text="<human>:你好\n<bot>:", max_tokens=64, stream=True, **extra):
    d = {"text_input": np.array([text.encode()], dtype=np.object_), "max_tokens": np.array([max_tokens], dtype=np.int32),
         "stream": np.array([stream])}
    for k, v in extra.items():
        d[k] = np.asarray(v)
    return d


def ids(tok, text):
    return tok.encode(text, add_bos=False)


def test_a_request_streams_its_text_and_ends_with_one_final_carrying_the_counts(make, tok):
    svc, r = make(), Responder()
    svc.start(r, lambda: inputs())
    link = svc.link
    rid = link.only()
    sent = link.calls[rid][0]
    assert sent["input_ids"].tolist() == [tok.encode("<human>:你好\n<bot>:")] and sent["streaming"].item() is True
    assert svc.stats() == {"inflight": 1}
    tokens = ids(tok, ANSWER)
    for k in range(0, len(tokens), 4):
        link.emit(rid, tokens[k : k + 4])
    link.emit(rid, [tok.eos_id], final=True)
    assert r.done.wait(5)
    assert r.text() == ANSWER and len(r.finals()) == 1
    final = r.finals()[0][0]
    assert final["finish_reason"][0] == b"eos" and final["num_output_tokens"][0] == len(tokens) + 1
    assert final["num_input_tokens"][0] == len(tok.encode("<human>:你好\n<bot>:"))
    assert wait_until(lambda: svc.stats() == {"inflight": 0})


def test_admission_refuses_the_excess_before_reading_its_inputs(make):
    svc = make(max_inflight=2)
    held = [Responder(), Responder()]
    for r in held:
        svc.start(r, lambda: inputs())

    def never():
        raise AssertionError("an overloaded request's inputs were read")

    refused = Responder()
    svc.start(refused, never)
    (_, err, final), = refused.sent
    assert isinstance(err, ServerOverloadedError) and final and "2 places are taken" in err.message
    rid = next(iter(svc.link.calls))
    svc.link.emit(rid, final=True)  # one ends: its place is free again
    assert wait_until(lambda: svc.stats() == {"inflight": 1})
    again = Responder()
    svc.start(again, lambda: inputs())
    assert again.sent == [] and svc.stats() == {"inflight": 2}


def test_a_bad_request_gets_a_typed_error_and_gives_its_place_back(make):
    svc = make(max_inflight=1)
    for _ in range(3):  # the one place is freed each time
        r = Responder()
        svc.start(r, lambda: inputs(temperature=np.array([-1.0], dtype=np.float32)))
        (_, err, final), = r.sent
        assert isinstance(err, InvalidRequestError) and final and err.message.startswith("temperature:")
    r = Responder()
    svc.start(r, lambda: {"max_tokens": np.array([4], dtype=np.int32)})  # no text_input
    assert "text_input" in r.sent[0][1].message
    broken = Responder()
    svc.start(broken, lambda: 1 / 0)  # anything unexpected: a generic error naming only its type
    assert broken.sent[0][1].message == "ziya: could not start the request (ZeroDivisionError)"
    assert svc.stats() == {"inflight": 0}


def test_a_client_cancel_stops_the_engine_once_and_finishes_cancelled(make, tok):
    svc, r = make(), Responder()
    svc.start(r, lambda: inputs())
    rid = svc.link.only()
    tokens = ids(tok, ANSWER)
    svc.link.emit(rid, tokens[:3])
    assert wait_until(lambda: r.sent)
    r.cancelled = True
    assert wait_until(lambda: svc.link.stops == [rid])
    svc.link.emit(rid, tokens[3:6])  # the engine sends a little more before it stops: held back
    svc.link.emit(rid, final=True)
    assert r.done.wait(5)
    time.sleep(0.05)
    assert svc.link.stops == [rid]  # once
    assert r.finals()[0][0]["finish_reason"][0] == b"cancelled"
    assert r.text() == tok.decode(tokens[:6])


def test_a_stop_string_cuts_the_text_and_stops_the_engine(make, tok):
    svc, r = make(), Responder()
    svc.start(r, lambda: inputs(stop_words=np.array([b"Beijing"], dtype=np.object_)))
    rid = svc.link.only()
    for t in ids(tok, ANSWER + " and more"):
        svc.link.emit(rid, [t])
    assert wait_until(lambda: svc.link.stops == [rid])
    svc.link.emit(rid, final=True)
    assert r.done.wait(5)
    assert r.text() == ANSWER.split("Beijing")[0] and r.finals()[0][0]["finish_reason"][0] == b"stop"


def test_an_engine_error_reaches_the_client_typed_and_closes_the_request(make):
    svc, r = make(), Responder()
    svc.start(r, lambda: inputs())
    rid = svc.link.only()
    svc.link.emit(rid, final=True, error="[ziya:overloaded] synthetic: overloaded, 2 running")
    assert r.done.wait(5)
    (_, err, final), = r.sent
    assert isinstance(err, ServerOverloadedError) and final
    plain = Responder()
    svc.start(plain, lambda: inputs())
    rid2 = next(k for k in svc.link.calls if k != rid)
    svc.link.emit(rid2, final=True, error="Stub process is not healthy")
    assert plain.done.wait(5) and isinstance(plain.sent[0][1], ServerError)
    assert plain.sent[0][1].message == "synthetic: Stub process is not healthy"
    assert wait_until(lambda: svc.stats() == {"inflight": 0})


def test_an_engine_that_cannot_be_called_fails_the_request(make):
    svc, r = make(link=Link(fail_submit=True)), Responder()
    svc.start(r, lambda: inputs())
    assert r.done.wait(5)
    assert r.sent[0][1].message == "ziya: engine unavailable (ConnectionRefusedError)"
    assert wait_until(lambda: svc.stats() == {"inflight": 0})


def test_a_failed_send_closes_the_request_without_a_second_final(make, tok):
    svc, r = make(), Responder(fail=True)
    svc.start(r, lambda: inputs())
    rid = svc.link.only()
    svc.link.emit(rid, ids(tok, "hello there"))
    assert r.done.wait(5)
    assert wait_until(lambda: svc.stats() == {"inflight": 0}) and svc.link.stops == [rid]


def test_drain_waits_for_open_requests_then_closes_the_link(make, tok):
    svc, r = make(drain_s=5.0), Responder()
    svc.start(r, lambda: inputs())
    rid = svc.link.only()
    t = threading.Thread(target=svc.finalize)
    t.start()
    time.sleep(0.2)
    assert t.is_alive() and not svc.link.closed  # still waiting for the open request
    svc.link.emit(rid, ids(tok, "done"), final=True)
    t.join(5)
    assert not t.is_alive() and svc.link.closed and r.finals()


def test_without_a_grpc_address_the_front_door_says_how_to_give_one(monkeypatch, tiny_ckpt):
    from ziya_trt.serving.config import ConfigError, ServeConfig
    from ziya_trt.serving.engine_link import GRPC_URL_ENV

    monkeypatch.delenv(GRPC_URL_ENV, raising=False)
    with pytest.raises(ConfigError, match="--grpc-port"):
        FrontDoorService.from_config(ServeConfig(engine="synthetic", tokenizer_dir=tiny_ckpt), "ziya")



def test_draining_refuses_new_requests_and_its_deadline_ends_the_rest_typed(tok, tmp_path):
    from ziya_trt.errors import ServerShuttingDownError
    from ziya_trt.serving.drain import drain_file, start_drain

    svc = FrontDoorService(FrontDoor(tok, FrontDoorLimits(256, 512)), Link(), max_inflight=4, engine_name="synthetic",
                           send_threads=2, cancel_check_s=0.005, drain_path=drain_file(tmp_path))
    try:
        running = Responder()
        svc.start(running, lambda: inputs())
        start_drain(tmp_path, time.time() + 0.4)
        assert wait_until(lambda: svc.drain.draining)
        late = Responder()
        svc.start(late, lambda: inputs())
        assert isinstance(late.sent[0][1], ServerShuttingDownError)
        assert running.done.wait(3)  # the deadline: the running request ends with a typed error
        (_, err, final), = running.finals()
        assert isinstance(err, ServerShuttingDownError) and final
        assert wait_until(lambda: svc.stats() == {"inflight": 0})
    finally:
        svc.drain.close()
        svc.outbox.close(timeout_s=0.5)


def test_num_return_sequences_answers_each_sequence_with_its_index_then_one_bare_final(make, tok):
    """As tensorrt_llm_bls answers: each response one sequence's text with sequence_index, a sequence's last with its
    counts and finish reason; the final flag once, after every sequence has ended. The request takes a place per
    sequence."""
    svc, r = make(max_inflight=4), Responder()
    svc.start(r, lambda: inputs(num_return_sequences=np.array([2], dtype=np.int32)))
    link = svc.link
    rid = link.only()
    assert link.calls[rid][0]["num_return_sequences"].tolist() == [[2]]
    assert svc.sessions.budget.try_acquire() and svc.sessions.budget.try_acquire()  # 2 of 4 places left
    assert svc.sessions.budget.try_acquire() is None
    on_event = link.calls[rid][1]

    def emit(index, text, final=False):
        on_event({"output_ids": np.asarray([[ids(tok, text)]], dtype=np.int32),
                  "sequence_index": np.asarray([[index]], dtype=np.int32)}, None, final)

    emit(1, " one")
    emit(0, " two")
    emit(1, " three", final=True)
    assert r.done.wait(5)
    by_index: dict[int, str] = {}
    ends = {}
    for o, _, final in r.sent:
        if o is None:
            assert final  # the bare final
            continue
        i = int(o["sequence_index"][0])
        by_index[i] = by_index.get(i, "") + o["text_output"][0].decode()
        if "finish_reason" in o:
            ends[i] = (o["finish_reason"][0], int(o["num_output_tokens"][0]))
    assert by_index == {0: tok.decode(ids(tok, " two")), 1: tok.decode(ids(tok, " one") + ids(tok, " three"))}
    # the engine ended them (its final, no max tokens reached): the end token, as for one sequence
    assert ends == {0: (b"eos", len(ids(tok, " two"))), 1: (b"eos", len(ids(tok, " one")) + len(ids(tok, " three")))}
    assert len(r.finals()) == 1 and r.sent[-1] == (None, None, True)
