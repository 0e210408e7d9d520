"""The in-flight batching loop shared by the engine stand-ins.

The loop owns admission (a fixed number of slots plus a bounded wait queue), cancellation by
request id, and draining on shutdown. Subclasses supply ``_admit`` (prefill one request into a slot)
and ``_step`` (advance every active request by one token).

``stats()`` also gives what TensorRT-LLM's executor reports of its latest iteration, for the backend's metric
families (``serving/triton/backend_metrics.py``): every request holding a slot is in every step here (scheduled;
none is ever paused or left out), those with no token yet are in their context phase, and the KV blocks are those
the running requests' tokens fill, ``block_tokens`` each, in a pool of ``max_slots`` sequences of ``max_seq_len``
(the slot cache the reference engine allocates; the synthetic engine has none, and reports what its requests
would hold).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from ..errors import InvalidRequestError, QueueFullError, ServerError, ServerShuttingDownError, ZiyaError
from ..finish import FinishReason
from ..wire.trtllm_template import template
from .request import EngineLimits, EngineOutput, EngineRequest, PerfMetrics, Sink, validate

log = logging.getLogger(__name__)


class Group:
    """The sequences of one request (num_return_sequences): how many have not ended yet, and the tokens they
    generated, so that only the last one's end is the request's end (the executor's isFinal)."""

    __slots__ = ("left", "generated", "over")

    def __init__(self, n: int):
        self.left, self.generated, self.over = n, 0, False


@dataclass
class Live:
    """One sequence of a request, from its submission until it leaves its slot."""

    req: EngineRequest
    sink: Sink
    index: int = 0  # its sequence_index
    group: Group | None = None
    slot: int = -1
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # tokens already streamed
    t_submit: float = 0.0
    t_admit: float = 0.0
    cancelled: bool = False
    reused_blocks: int = 0  # KV-cache blocks of an earlier request's prefix it started from
    failed: bool = False
    t_first_token: float = 0.0
    log_probs: list[float] | None = None  # beside ``generated``, for a request that set return_log_probs
    prepared: object = None  # what the engine's ``_prepare`` made for it before it was queued (a compiled grammar)

    def __post_init__(self) -> None:
        if self.req.return_log_probs:
            self.log_probs = []
        if self.group is None:
            self.group = Group(1)

    @property
    def key(self) -> str:
        """Its name in the loop: the request id, and the sequence index for the sequences after the first."""
        return self.req.id if self.index == 0 else f"{self.req.id}/{self.index}"

    @property
    def seed(self) -> int | None:
        return self.req.sequence_seed(self.index)

    def output(self, tokens: list[int], final: bool = False, reason: FinishReason | None = None,
               log_probs: list[float] | None = None, sequence_final: bool = False) -> EngineOutput:
        """One response's output; with the request's perf metrics when it asked for them (return_perf_metrics), and
        ``log_probs`` (one per generated token of ``tokens``) when it asked for those. ``final``: the request's last
        (every sequence has ended); ``sequence_final``: this sequence's last."""
        now = time.monotonic()
        if tokens and not self.t_first_token:
            self.t_first_token = now
        perf = None
        if self.req.return_perf_metrics:  # TensorRT-LLM's time points: steady clock, in ns
            ns = [int(t * 1e9) for t in (self.t_submit, self.t_admit, self.t_first_token, now)]
            perf = PerfMetrics(*ns)
        return EngineOutput(tokens, final=final, finish_reason=reason, num_input_tokens=len(self.req.input_ids),
                            num_output_tokens=len(self.generated), reused_blocks=self.reused_blocks, perf=perf,
                            log_probs=log_probs, sequence_index=self.index, sequence_final=sequence_final or final)


class EngineLoop:
    """In-flight batching: requests join at the next step and leave as soon as they finish."""

    def __init__(self, limits: EngineLimits, name: str = "engine", block_tokens: int = 32):
        self.limits = limits
        self.name = name
        self.block_tokens = block_tokens
        self._cv = threading.Condition()
        self._waiting: deque[Live] = deque()
        self._active: dict[str, Live] = {}
        self._free_slots = list(range(limits.max_slots))[::-1]
        self._cancel_ids: set[str] = set()
        self._admitting = True
        self._closed = False
        self._ids = itertools.count()
        self.counters = {"generated_tokens": 0, "cancelled": 0, "completed": 0, "failed": 0, "rejected": 0}
        self.on_queue_time: Callable[[float], None] | None = None  # each admitted request's wait for a slot
        # each request's end, however it ended: (its prompt tokens, the tokens it generated)
        self.on_request_end: Callable[[int, int], None] | None = None
        self._iterations, self._iteration_time = 0, 0.0  # loop passes, and the wall time of the latest
        self._thread = threading.Thread(target=self._run, name=f"{name}-loop", daemon=True)
        self._thread.start()

    # --- public, thread-safe ---------------------------------------------------------------
    def submit(self, req: EngineRequest, sink: Sink) -> str:
        """Queue a request. Raises a typed error at once if it is invalid or the engine is full."""
        validate(req, self.limits)
        prepared = self._prepare(req)  # on the caller's thread: the loop never waits for it
        with self._cv:
            if not self._admitting:
                raise ServerShuttingDownError(f"{self.name}: shutting down, not accepting requests")
            if not req.id:
                req.id = f"auto-{next(self._ids)}"
            if any(lv.req.id == req.id for lv in (*self._active.values(), *self._waiting)):
                raise InvalidRequestError(f"request id {req.id!r} is already in flight", "request_id")
            # waiting sequences take the free slots at the next step: count them against slots + queue; each of a
            # request's sequences takes a slot of its own (TensorRT-LLM's child requests each take a batch slot)
            n = req.num_return_sequences
            if len(self._waiting) + n > len(self._free_slots) + self.limits.max_queue:
                self.counters["rejected"] += 1
                raise QueueFullError(template().backend.queue_full_message(self.limits.max_queue))
            group, now = Group(n), time.monotonic()
            self._waiting.extend(Live(req, sink, index=i, group=group, t_submit=now, prepared=prepared)
                                 for i in range(n))
            self._cv.notify()
        return req.id

    def cancel(self, request_id: str) -> bool:
        """Stop a request by id, all of its sequences; their slots are freed before the next step. True if it was
        known."""
        with self._cv:
            known = False
            for w in [w for w in self._waiting if w.req.id == request_id]:
                self._waiting.remove(w)
                if w.index == 0:
                    self.counters["cancelled"] += 1
                self._emit_final(w, FinishReason.CANCELLED)
                known = True
            if any(lv.req.id == request_id for lv in self._active.values()):
                self._cancel_ids.add(request_id)
                self._cv.notify()
                known = True
        return known

    def stats(self) -> dict:
        with self._cv:
            live = list(self._active.values())
            out = {"active": len(live), "waiting": len(self._waiting), "free_slots": len(self._free_slots),
                   "iterations": self._iterations, "iteration_time": self._iteration_time, **self.counters}
        bt, lim = self.block_tokens, self.limits
        context = [lv for lv in live if not lv.generated]
        return out | {
            "max_active": lim.max_slots,
            "scheduled": len(live),
            "context": len(context),
            "context_tokens": sum(len(lv.req.input_ids) - lv.reused_blocks * bt for lv in context),
            "kv_tokens_per_block": bt,
            "kv_blocks_max": lim.max_slots * -(-lim.max_seq_len // bt),
            "kv_blocks_used": sum(-(-(len(lv.req.input_ids) + len(lv.generated)) // bt) for lv in live),
            "kv_blocks_reused": 0,  # blocks found in a prefix cache since the start (the reference engine's)
            "runtime_cpu_bytes": 0,  # what the engine allocated for its runtime (the reference engine's KV)
        }

    def stop_admitting(self) -> None:
        """Refuse new requests (``[ziya:shutting_down]``); the running and waiting ones go on."""
        with self._cv:
            self._admitting = False

    def shutdown(self, drain_timeout_s: float = 30.0) -> None:
        """Stop admitting, let running requests finish within the timeout, fail what is left."""
        with self._cv:
            self._admitting = False
            for w in self._waiting:
                self._emit_error(w, ServerShuttingDownError(f"{self.name}: shut down before the request started"))
            self._waiting.clear()
            deadline = time.monotonic() + drain_timeout_s
            while self._active and time.monotonic() < deadline:
                self._cv.wait(0.05)
            for live in list(self._active.values()):
                self._release(live)
                self._emit_error(live, ServerShuttingDownError(f"{self.name}: shut down before the request finished"))
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    # --- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._waiting and not self._active:
                    self._cv.wait()
                if self._closed:
                    return
                if self._cancel_ids:
                    gone = [lv for lv in self._active.values() if lv.req.id in self._cancel_ids]
                    self.counters["cancelled"] += len({lv.req.id for lv in gone})
                    for live in gone:
                        self._release(live)
                        self._emit_final(live, FinishReason.CANCELLED)
                self._cancel_ids.clear()
                self._iterations += 1
                self._iteration_time = time.time()
                admit = []
                while self._waiting and self._free_slots:
                    live = self._waiting.popleft()
                    live.slot = self._free_slots.pop()
                    live.t_admit = time.monotonic()
                    self._active[live.key] = live
                    admit.append(live)
                    if self.on_queue_time is not None:
                        self.on_queue_time(live.t_admit - live.t_submit)
                active = list(self._active.values())
            for live in admit:
                self._guard(live, self._admit)
            if admit:  # an admission that failed has left already
                active = [a for a in active if a.key in self._active]
            if active:
                try:
                    self._step(active)
                except Exception as e:  # a batched step failing fails the batch, never the server
                    log.exception("%s: step failed", self.name)
                    for live in active:
                        self._fail(live, e)
            with self._cv:
                self._cv.notify_all()

    def _guard(self, live: Live, fn) -> None:
        try:
            fn(live)
        except Exception as e:  # one request's fault fails that request only
            log.exception("%s: request %s failed", self.name, live.req.id)
            self._fail(live, e)

    def _fail(self, live: Live, e: Exception) -> None:
        """The sequence failed: the request ends with the error, and its other sequences with it (the backend
        forgets a request once it has sent its error)."""
        with self._cv:
            if live.key not in self._active:
                return
            live.failed = True  # its KV cannot be trusted for reuse
            self._release(live)
            self.counters["failed"] += 1
            others = [lv for lv in (*self._active.values(), *self._waiting)
                      if lv.req.id == live.req.id and lv is not live] if live.req.num_return_sequences > 1 else []
            for lv in others:
                lv.failed = True
                if lv in self._waiting:
                    self._waiting.remove(lv)
                else:
                    self._release(lv)
        err = e if isinstance(e, ZiyaError) else ServerError(f"{self.name}: request failed in the engine ({type(e).__name__})")
        self._emit_error(live, err)

    # --- for subclasses --------------------------------------------------------------------
    def _prepare(self, req: EngineRequest) -> object:
        """Check and prepare a request before it is queued (on the submitting thread); what it returns is the
        request's ``Live.prepared``. An engine without guided decoding refuses a guided request."""
        if req.guide is not None:
            raise InvalidRequestError(f"guided_decoding_guide_type: {self.name}: this engine has no guided decoding "
                                      "(structured outputs)", "guided_decoding_guide_type")

    def _admit(self, live: Live) -> None:
        raise NotImplementedError

    def _step(self, active: list[Live]) -> None:
        raise NotImplementedError

    def _on_release(self, live: Live) -> None:
        """Free per-slot state (KV cache) here."""

    def append_token(self, live: Live, token: int, log_prob: float | None = None) -> None:
        """Record one generated token (and its log probability, for a request that asked); stream it and finish the
        request when it is done."""
        self.append_tokens(live, (token,), None if log_prob is None else (log_prob,))

    def append_tokens(self, live: Live, tokens, log_probs=None) -> None:
        """Record tokens generated since the last call and stream them as one response, so an engine
        that falls behind sends fewer, larger responses instead of a backlog. ``log_probs``: one per token, for a
        request that set return_log_probs (an end token is not output, nor is its log probability)."""
        if live.key not in self._active:
            return
        req = live.req
        reason = None
        lps = live.log_probs
        for k, token in enumerate(tokens):
            if req.end_id is not None and token == req.end_id and len(live.generated) >= req.min_tokens:
                reason = FinishReason.EOS
                break
            live.generated.append(token)
            if lps is not None:
                lps.append(log_probs[k])
            self.counters["generated_tokens"] += 1
            if any(_ends_with(live.generated, w) for w in req.stop_words):
                reason = FinishReason.STOP
                break
            if len(live.generated) >= req.max_new_tokens:
                reason = FinishReason.LENGTH
                break
        if reason is not None:
            self.end(live, reason)
        elif req.streaming:
            new = live.generated[live.sent :]
            new_lps = live.log_probs[live.sent :] if live.log_probs is not None else None
            live.sent = len(live.generated)
            live.sink(live.output(new, log_probs=new_lps))

    def end(self, live: Live, reason: FinishReason) -> None:
        """Finish a sequence now, with what it has generated (its grammar is complete, say)."""
        if live.key not in self._active:
            return
        with self._cv:
            self._release(live)
            self.counters["completed"] += 1
        self._emit_final(live, reason)

    def _release(self, live: Live) -> None:
        """Give the slot back (caller holds the lock)."""
        if self._active.pop(live.key, None) is not None:
            self._free_slots.append(live.slot)
            self._on_release(live)

    def _emit_final(self, live: Live, reason: FinishReason) -> None:
        req = live.req
        lps = live.log_probs
        if req.streaming:
            tokens = live.generated[live.sent :]
            lps = lps[live.sent :] if lps is not None else None
        else:
            tokens = live.generated if req.exclude_input else req.input_ids + live.generated
        live.sent = len(live.generated)
        final = self._ended(live)
        if final is None:  # the request already ended with an error
            return
        live.sink(live.output(tokens, final=final, reason=reason, log_probs=lps, sequence_final=True))

    def _emit_error(self, live: Live, err: ZiyaError) -> None:
        live.group.left = 1  # an error ends the request, whatever its other sequences were doing
        if self._ended(live) is not None:
            live.sink(EngineOutput([], final=True, finish_reason=FinishReason.ERROR, error=err,
                                   sequence_index=live.index, sequence_final=True))

    def _ended(self, live: Live) -> bool | None:
        """A sequence ended: True when it was the request's last (its response is the request's final one), False
        while others go on, None when the request is already over (an error ended it)."""
        g = live.group
        if g.over:
            return None
        g.left -= 1
        g.generated += len(live.generated)
        if g.left > 0:
            return False
        g.over = True
        if self.on_request_end is not None:  # once per request, as the backend observes it
            self.on_request_end(len(live.req.input_ids), g.generated)
        return True


def _ends_with(seq: list[int], tail: list[int]) -> bool:
    return bool(tail) and len(seq) >= len(tail) and seq[-len(tail) :] == tail
