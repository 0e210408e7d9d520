"""The engine's outbox: ordering, coalescing, first-response priority, cancellation polling.

The handles here are plain objects standing in for Triton's response senders, which exist only inside
a Python-backend stub; the same code runs behind the real server in tests/model_repo and
tests/reliability.
"""

import random
import threading
import time

import pytest

from tests.polling import wait_until
from ziya_trt.finish import FinishReason
from ziya_trt.engine.request import EngineOutput
from ziya_trt.engine.request import coalesce
from ziya_trt.serving.triton.outbox import Outbox, Sent
from ziya_trt.errors import ServerError


def out(tokens, final=False, n=0):
    return EngineOutput(list(tokens), final=final, finish_reason=FinishReason.LENGTH if final else None,
                        num_input_tokens=3, num_output_tokens=n)


class Recorder:
    """Records every send as (handle, output, time); optionally blocks or fails."""

    def __init__(self, delay_s=0.0):
        self.sent = []
        self.lock = threading.Lock()
        self.delay_s = delay_s
        self.gate = threading.Event()
        self.gate.set()
        self.fail_for = set()

    def __call__(self, handle, o):
        self.gate.wait()
        if self.delay_s:
            time.sleep(self.delay_s)
        if handle in self.fail_for:
            self.fail_for.discard(handle)
            raise RuntimeError("send failed")
        with self.lock:
            self.sent.append((handle, o, time.monotonic()))

    def of(self, handle):
        with self.lock:
            return [o for h, o, _ in self.sent if h == handle]


def test_coalesce_merges_tokens_and_keeps_errors_apart():
    err = EngineOutput([], final=True, finish_reason=FinishReason.ERROR, error=ServerError("boom"))
    merged = coalesce([out([1], n=1), out([2, 3], n=3), err])
    assert [m.tokens for m in merged] == [[1, 2, 3], []]
    assert merged[0].num_output_tokens == 3 and not merged[0].final
    assert merged[1].error is err.error
    final = coalesce([out([1], n=1), out([2], final=True, n=2)])
    assert len(final) == 1 and final[0].final and final[0].finish_reason is FinishReason.LENGTH
    assert coalesce([]) == []


def test_every_token_arrives_once_and_in_order_with_one_final_last():
    rec = Recorder(delay_s=0.0005)
    box = Outbox(rec, lambda h: False, lambda rid: None, threads=3, check_period_s=1.0)
    rng = random.Random(0)
    streams = {i: box.open(f"r{i}", i) for i in range(40)}
    expected = {i: [] for i in streams}
    pending = list(streams)
    k = 0
    while pending:
        i = rng.choice(pending)
        toks = [k, k + 1]
        k += 2
        expected[i] += toks
        final = len(expected[i]) >= 20
        box.put(streams[i], out(toks, final=final, n=len(expected[i])))
        if final:
            pending.remove(i)
    box.close()
    for i in streams:
        got = rec.of(i)
        assert [t for o in got for t in o.tokens] == expected[i]
        assert [o.final for o in got] == [False] * (len(got) - 1) + [True]
        assert got[-1].num_output_tokens == 20
    assert box.open_streams() == 0


def test_outputs_that_pile_up_behind_a_slow_send_go_out_as_one_response():
    rec = Recorder()
    box = Outbox(rec, lambda h: False, lambda rid: None, threads=1, check_period_s=1.0)
    a = box.open("a", "a")
    rec.gate.clear()  # the first send blocks, as a round trip to a busy server does
    box.put(a, out([1], n=1))
    assert wait_until(lambda: not a.pending)  # taken by the sender thread, which now waits
    for t in range(2, 6):
        box.put(a, out([t], n=t))
    rec.gate.set()
    box.put(a, out([], final=True, n=5))
    box.close()
    assert [o.tokens for o in rec.of("a")] == [[1], [2, 3, 4, 5]]
    assert rec.of("a")[-1].final


@pytest.mark.parametrize("held_first", [False, True])
def test_a_request_first_response_goes_ahead_of_streams_already_running(held_first):
    """A new request's first response jumps the queue. With ``held_first`` its first delivery sends nothing
    (the front door holds back half a character or a possible stop string), and it keeps the priority."""
    rec = Recorder()

    def send(h, o):
        if held_first and h == "new" and o.tokens == [7]:
            return Sent.HELD
        rec(h, o)

    box = Outbox(send, lambda h: False, lambda rid: None, threads=1, check_period_s=1.0)
    old = [box.open(f"old{i}", f"old{i}") for i in range(3)]
    for st in old:
        box.put(st, out([1], n=1))
    new = box.open("new", "new")
    if held_first:
        box.put(new, out([7], n=1))
        assert wait_until(lambda: not new.pending)
    assert wait_until(lambda: len(rec.sent) == 3)
    rec.gate.clear()
    blocker = box.open("blocker", "blocker")
    box.put(blocker, out([9], n=1))
    assert wait_until(lambda: not blocker.pending)
    for st in old:
        box.put(st, out([2], n=2))
    box.put(new, out([8], n=2))
    rec.gate.set()
    box.close()
    assert [h for h, _, _ in rec.sent[3:]] == ["blocker", "new", "old0", "old1", "old2"]
    assert len(rec.sent) == 8  # a held delivery is not a response


def test_cancelled_requests_are_reported_once_and_never_polled_after_their_final():
    polls, cancelled = [], []
    lock = threading.Lock()
    rec = Recorder()

    def is_cancelled(h):
        with lock:
            polls.append((h, time.monotonic()))
        return h == "gone"

    box = Outbox(rec, is_cancelled, cancelled.append, threads=2, check_period_s=0.005)
    gone, done = box.open("gone-id", "gone"), box.open("done-id", "done")
    box.put(done, out([1], final=True, n=1))
    assert wait_until(lambda: cancelled == ["gone-id"])
    time.sleep(0.05)
    assert cancelled == ["gone-id"]  # reported once, not on every poll
    t_final = [t for h, o, t in rec.sent if h == "done" and o.final][0]
    with lock:
        assert not [t for h, t in polls if h == "done" and t > t_final]
    box.put(gone, out([], final=True, n=0))  # the engine's CANCELLED final still goes out
    box.close()
    assert rec.of("gone")[-1].final


def test_a_stream_is_not_polled_before_it_has_an_id():
    polls = []
    box = Outbox(Recorder(), lambda h: polls.append(h) or False, lambda rid: None, threads=1, check_period_s=0.005)
    st = box.open("", "h")
    time.sleep(0.05)
    assert polls == []
    st.id = "auto-1"
    assert wait_until(lambda: polls)
    box.close()


def test_after_a_failed_send_the_sender_keeps_going():
    rec = Recorder()
    rec.fail_for.add("x")
    box = Outbox(rec, lambda h: False, lambda rid: None, threads=1, check_period_s=1.0)
    x, y = box.open("x", "x"), box.open("y", "y")
    box.put(x, out([1], n=1))
    assert wait_until(lambda: "x" not in rec.fail_for)  # the send was tried, and failed
    box.put(y, out([2], final=True, n=1))
    box.put(x, out([3], final=True, n=2))
    box.close()
    assert [o.tokens for o in rec.of("y")] == [[2]]
    assert [o.tokens for o in rec.of("x")] == [[3]]


def test_nothing_is_sent_after_a_final():
    rec = Recorder()
    box = Outbox(rec, lambda h: False, lambda rid: None, threads=1, check_period_s=1.0)
    st = box.open("a", "a")
    box.put(st, out([1], final=True, n=1))
    assert wait_until(lambda: rec.sent)
    box.put(st, out([2], n=2))
    box.close()
    assert [o.tokens for o in rec.of("a")] == [[1]]


def test_a_send_that_ends_the_request_closes_its_stream():
    """The front door ends a request early (an error) from inside a non-final send: nothing is sent or
    polled for it after that."""
    polls, sent = [], []

    def send(h, o):
        sent.append(o.tokens)
        return Sent.ENDED if o.tokens == [2] else None  # this one ended the request

    box = Outbox(send, lambda h: polls.append(time.monotonic()) or False, lambda rid: None, threads=1,
                 check_period_s=0.005)
    st = box.open("a", "a")
    box.put(st, out([1]))
    assert wait_until(lambda: polls)
    box.put(st, out([2]))
    assert wait_until(lambda: box.open_streams() == 0)
    t_end = time.monotonic()
    box.put(st, out([3], final=True, n=3))
    time.sleep(0.05)
    box.close()
    assert sent == [[1], [2]] and not [t for t in polls if t > t_end]


def test_at_least_one_sender_thread():
    with pytest.raises(ValueError, match="threads"):
        Outbox(Recorder(), lambda h: False, lambda rid: None, threads=0)
