"""Sending a Python model's responses without holding up the thread that produces them, and
watching for cancelled requests.

In Triton's Python backend every response send is a blocking round trip to the server process, and
so is every ``is_cancelled()`` check. Done inline, they serialise the producer: at 256 streams of
50 tokens/s that is 12,800 round trips a second on one thread, and new requests wait behind them.
Both the engine stand-ins (outputs from the engine loop) and the text front door (outputs from the
engine link) send through an outbox.

The outbox takes outputs without blocking and sends them from a few sender threads, so round trips
overlap. Each request belongs to one sender thread, so its responses stay in order; a request whose
earlier outputs are still waiting to go out gets them merged into one response (the same coalescing
an engine does when it falls behind). One watcher thread asks whether each open request was
cancelled, at most once per period, and never after its final response: the server frees the
response factory then, and asking about it afterwards is not safe. ``send`` may return a ``Sent`` to
say that it held the output back (nothing went out: the request keeps its first-response priority)
or that the response it sent ended the request early (an error: the request is closed too).

Nothing here imports Triton: ``send`` and ``is_cancelled`` are plain callables, so the logic is
tested without a server.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from enum import Enum
from typing import Any, Callable

from ...engine.request import EngineOutput, coalesce

log = logging.getLogger(__name__)


class Sent(Enum):
    """What a ``send`` callback did with an output; returning None means RESPONDED."""

    RESPONDED = "responded"
    HELD = "held"  # no response went out yet (e.g. text held back until a character is whole)
    ENDED = "ended"  # the response ended the request early


Send = Callable[[Any, EngineOutput], "Sent | None"]
IsCancelled = Callable[[Any], bool]


class Stream:
    """One request's outgoing side: its handle (the response sender), outputs not yet sent, and state."""

    __slots__ = ("id", "handle", "shard", "pending", "queued", "closed", "cancel_seen", "lock", "started")

    def __init__(self, request_id: str, handle: Any, shard: int):
        self.id = request_id
        self.handle = handle
        self.shard = shard
        self.pending: list[EngineOutput] = []
        self.queued = False
        self.closed = False  # the final response went out: never touch the handle again
        self.cancel_seen = False
        self.started = False  # a response went out (the first one goes ahead of the queue: it is the TTFT)
        self.lock = threading.Lock()  # held around every use of the handle


class _Shard:
    def __init__(self):
        self.cv = threading.Condition()
        self.ready: deque[Stream] = deque()


class Outbox:
    def __init__(
        self,
        send: Send,
        is_cancelled: IsCancelled,
        on_cancel: Callable[[str], Any],
        threads: int = 4,
        check_period_s: float = 0.05,
        name: str = "outbox",
    ):
        if threads < 1:
            raise ValueError(f"threads: {threads} must be at least 1")
        self._send = send
        self._is_cancelled = is_cancelled
        self._on_cancel = on_cancel
        self.check_period_s = check_period_s
        self._shards = [_Shard() for _ in range(threads)]
        self._next = itertools.count()
        self._open: dict[int, Stream] = {}
        self._open_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sender, args=(s,), name=f"{name}-send-{i}", daemon=True)
            for i, s in enumerate(self._shards)
        ]
        self._threads.append(threading.Thread(target=self._watch, name=f"{name}-watch", daemon=True))
        for t in self._threads:
            t.start()

    # --- called by the adapter and the engine loop --------------------------------------------
    def open(self, request_id: str, handle: Any) -> Stream:
        st = Stream(request_id, handle, next(self._next) % len(self._shards))
        with self._open_lock:
            self._open[id(st)] = st
        return st

    def put(self, st: Stream, out: EngineOutput) -> None:
        """Queue one output; never blocks on a send."""
        shard = self._shards[st.shard]
        with shard.cv:
            st.pending.append(out)
            if not st.queued:
                st.queued = True
                if st.started:
                    shard.ready.append(st)
                else:
                    shard.ready.appendleft(st)
                shard.cv.notify()

    def open_streams(self) -> int:
        with self._open_lock:
            return len(self._open)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued, then stop the threads."""
        deadline = time.monotonic() + timeout_s
        for shard in self._shards:
            with shard.cv:
                while shard.ready and time.monotonic() < deadline:
                    shard.cv.wait(0.01)
        self._stop.set()
        for shard in self._shards:
            with shard.cv:
                shard.cv.notify_all()
        for t in self._threads:
            t.join(timeout=max(0.1, deadline - time.monotonic()))

    # --- threads -------------------------------------------------------------------------------
    def _sender(self, shard: _Shard) -> None:
        while True:
            with shard.cv:
                while not shard.ready and not self._stop.is_set():
                    shard.cv.wait()
                if not shard.ready:
                    return
                st = shard.ready.popleft()
                outs, st.pending, st.queued = st.pending, [], False
                shard.cv.notify_all()  # close() waits for the queues to empty
            sent = [self._deliver(st, out) for out in coalesce(outs)]
            if not st.started and any(r is not Sent.HELD for r in sent):
                with shard.cv:
                    st.started = True

    def _deliver(self, st: Stream, out: EngineOutput) -> Sent:
        with st.lock:
            if st.closed:
                return Sent.ENDED
            if out.final:
                self._end(st)
            try:
                sent = self._send(st.handle, out) or Sent.RESPONDED
            except Exception:  # the client is gone or the server is stopping: nothing to tell anyone
                log.debug("send failed for request %s", st.id, exc_info=True)
                return Sent.RESPONDED
            if sent is Sent.ENDED and not st.closed:  # the callback ended the request early (e.g. an error)
                self._end(st)
            return sent

    def _end(self, st: Stream) -> None:
        st.closed = True
        with self._open_lock:
            self._open.pop(id(st), None)

    def _watch(self) -> None:
        while not self._stop.wait(self.check_period_s):
            with self._open_lock:
                streams = list(self._open.values())
            for st in streams:
                if self._stop.is_set():
                    return
                if st.cancel_seen or not st.id:  # no id yet: the request is still being submitted
                    continue
                with st.lock:
                    if st.closed:
                        continue
                    try:
                        cancelled = self._is_cancelled(st.handle)
                    except Exception:
                        log.debug("cancellation check failed for request %s", st.id, exc_info=True)
                        continue
                if cancelled:
                    st.cancel_seen = True
                    self._on_cancel(st.id)
