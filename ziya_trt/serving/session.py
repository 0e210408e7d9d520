"""One text request's lifecycle, whatever the front: the Triton front door (``triton/frontdoor_service``, in a
Python stub, outputs delivered on its outbox's sender threads) and the OpenAI API (``http/openai/server``, on the
launcher's event loop) both run every request as a ``TextSession``. The fronts only translate wire formats.

- **Admit** (``Sessions.admit``): a place in the engine's one budget (``admission``), or ``[ziya:overloaded]``.
- **Open** (``Sessions.open``): format and tokenise (``frontdoor.TextJob``); a failure gives the place back.
- **Submit** (``TextSession.submit``): the engine call over the ``EngineLink``; each engine event reaches the
  front's sink as an ``EngineOutput`` (on the link's loop: the sink only queues).
- **Push** (``TextSession.push``): an output (the fronts merge what piled up with ``engine.request.coalesce``: the
  outbox for the front door, the event queue for the OpenAI API) turned into the text to send now: detokenised,
  held back at a stop string's prefix. A stop string that completes the text sends the
  engine one ``stop``; the final output adds the finished text. A request that asked for log probabilities gets
  them with the text (``logprobs``): those of the tokens behind the text ``push`` returned.
- **Several sequences** (``n`` > 1, the engine's ``num_return_sequences``): one engine call, one ``TextJob`` per
  sequence (``jobs``); each output is one sequence's (``sequence_index``). ``push_choices`` gives each sequence's text
  with its index, and says when a sequence's text is complete: at its stop string or max_tokens, or at the request's
  final response (the backend sends no per-sequence end: contracts/num-return-sequences.json). The engine is stopped
  when every sequence's text is complete (a stop ends all of a request's sequences, never one alone).
- **Cancel** (``TextSession.cancel``): the client cancelled or left: the engine gets one ``stop`` (none once the
  engine call is over) and the text ends with the finish reason ``cancelled``.
- **End** (``finish``, ``fail``, ``abandon``): the outcome is recorded once (``request_metrics``) and the place given
  back once, however many times a front reports the end.

Nothing here blocks or imports Triton or aiohttp: it runs on whichever thread or loop delivers the outputs.
"""

from __future__ import annotations

import time
from typing import Callable

from ..engine.request import EngineOutput
from ..errors import ServerError, ServerOverloadedError, ServerShuttingDownError, ZiyaError, from_triton, from_wire
from ..wire.arrays import engine_inputs, reused_blocks, sequence_index, stop_request_inputs
from ..wire.tensors import LOG_PROB_OUTPUTS
from .admission import Place, refusal
from .frontdoor import FrontDoor, TextJob
from .request_metrics import RecordFn, RequestOutcome

__all__ = ["Sessions", "TextSession"]


class Sessions:
    """What every request of one front shares: the request logic (``FrontDoor``), the engine link, the admission
    budget and the sink of outcomes. ``link`` is an ``EngineLink`` or anything with its ``submit``/``stop``."""

    def __init__(self, door: FrontDoor, link, budget, record: RecordFn, name: str, engine_name: str):
        self.door, self.link, self.budget, self.record = door, link, budget, record
        self.name, self.engine_name = name, engine_name

    def admit(self, places: int = 1) -> Place:
        """``places`` places in the engine's budget, one per sequence the request asks for (each takes an engine
        slot), all or none; ``ServerOverloadedError`` when they are not free."""
        held = []
        for _ in range(places):
            place = self.budget.try_acquire()
            if place is None:
                for p in held:
                    p.release()
                raise refusal(self.name, self.budget.size)
            held.append(place)
        if len(held) == 1:
            return held[0]
        return Place(lambda: [p.release() for p in held])

    def open(self, place: Place, make_job: Callable[[FrontDoor], TextJob], t0: float | None = None) -> "TextSession":
        """The request formatted and tokenised (``make_job``); on any failure the place is given back."""
        try:
            job = make_job(self.door)
        except BaseException:
            place.release()
            raise
        return TextSession(self, job, place, time.monotonic() if t0 is None else t0)

    def refused(self, err: ZiyaError, t0: float | None = None) -> None:
        """A request that ended before it had a session (refused, or its body was invalid)."""
        self.record(RequestOutcome.failed(err, 0.0 if t0 is None else time.monotonic() - t0))


class TextSession:
    """One admitted request: its ``TextJob`` (one per sequence: ``jobs``), its engine call, its one outcome."""

    __slots__ = ("sessions", "job", "jobs", "place", "t0", "t_first", "ended", "lp_seen", "complete")

    def __init__(self, sessions: Sessions, job: TextJob, place: Place, t0: float):
        self.sessions, self.job, self.place, self.t0 = sessions, job, place, t0
        self.jobs = [job] + [job.sibling() for _ in range(job.req.n - 1)]
        self.t_first: float | None = None  # when the first text was ready to send
        self.ended = False
        # each sequence's output tokens received so far: where its next ones' log probabilities start
        self.lp_seen = [0] * len(self.jobs)
        self.complete: set[int] = set()  # the sequences whose text is complete (push_choices)

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def n_output(self) -> int:
        """Tokens generated, over every sequence."""
        return sum(j.n_output for j in self.jobs)

    # --- the engine call ---------------------------------------------------------------------------------
    def submit(self, sink: Callable[[EngineOutput], None]) -> None:
        """Call the engine; each of its events reaches ``sink`` as an ``EngineOutput``, the last one final (an error
        is a final output with ``error`` set). Runs ``sink`` on the link's loop: it must only queue."""
        output = self._output
        on_event = lambda outputs, error, final: sink(output(outputs, error, final))  # noqa: E731
        if self.job.pending_lp is None:
            self.sessions.link.submit(self.job.id, engine_inputs(self.job.engine_request), on_event)
        else:
            self.sessions.link.submit(self.job.id, engine_inputs(self.job.engine_request), on_event,
                                      extra_outputs=LOG_PROB_OUTPUTS)

    def _output(self, outputs: dict, error: str | None, final: bool) -> EngineOutput:
        if error is not None:
            return EngineOutput([], final=True, error=self._engine_error(error))
        ids = outputs.get("output_ids")
        index = sequence_index(outputs)
        if not 0 <= index < len(self.jobs):
            return EngineOutput([], final=True, error=ServerError(
                f"{self.sessions.engine_name}: a response for sequence {index} of {len(self.jobs)}"))
        out = EngineOutput(ids.reshape(-1).tolist() if ids is not None else [], final=final,
                           reused_blocks=reused_blocks(outputs), sequence_index=index)
        if self.job.pending_lp is not None:
            return self._with_log_probs(out, outputs.get("output_log_probs"))
        return out

    def _engine_error(self, error: str) -> ZiyaError:
        """The engine call's error, typed: the engine's own ``[ziya:]`` code; Triton's own refusal of the engine model
        when it says the server is stopping or the queue is full (``errors.TRITON_MESSAGES``), which the client may
        retry; anything else is the server's fault, whatever Triton says of the request this front built."""
        err = from_wire(error)
        if err is not None:
            return err
        message = f"{self.sessions.engine_name}: {error}"
        triton = from_triton(error)
        if isinstance(triton, (ServerShuttingDownError, ServerOverloadedError)):
            return type(triton)(message)
        return ServerError(message)

    def _with_log_probs(self, out: EngineOutput, so_far) -> EngineOutput:
        """The new tokens' log probabilities: the engine sends every generated token's so far beside only the new
        tokens (contracts/log-probs.json), so they are taken by position, from the count of tokens received."""
        i = out.sequence_index
        start, n = self.lp_seen[i], len(out.tokens)
        new = so_far.reshape(-1)[start : start + n].tolist() if so_far is not None else []
        if len(new) < n:
            return EngineOutput([], final=True, error=ServerError(
                f"{self.sessions.engine_name}: {n} tokens came with {len(new)} log probabilities"))
        self.lp_seen[i] += n
        out.log_probs = new
        return out

    def push(self, out: EngineOutput) -> str:
        """The text to send now for one (merged) output: "" for nothing yet; the final output's includes the rest.
        An error output raises its error (the front answers with it and calls ``fail``)."""
        if out.error is not None:
            raise out.error
        job = self.job
        job.reused_blocks = max(job.reused_blocks, out.reused_blocks)
        text, stop = job.push(out.tokens, out.log_probs)
        if stop:  # a stop string completed the text: the engine need not go on
            self._stop_engine()
        if out.final:
            text += job.finish()
        if text and self.t_first is None:
            self.t_first = time.monotonic()
        return text

    def push_choices(self, out: EngineOutput) -> list[tuple[int, str, bool]]:
        """(sequence index, text to send now, whether that sequence's text is now complete) for one (merged) output;
        the request's final output completes every sequence. With one sequence this is ``push``. An error output
        raises its error."""
        if len(self.jobs) == 1:
            return [(0, self.push(out), out.final)]
        if out.error is not None:
            raise out.error
        i, job = out.sequence_index, self.jobs[out.sequence_index]
        job.reused_blocks = max(job.reused_blocks, out.reused_blocks)
        text, stop = job.push(out.tokens, out.log_probs)
        got = []
        if stop and i not in self.complete:  # its stop string or max_tokens: its text is complete, the others go on
            self.complete.add(i)
            got.append((i, text + job.finish(), True))
            if len(self.complete) == len(self.jobs):
                self._stop_engine()
        elif text:
            got.append((i, text, False))
        if out.final:
            for k, j in enumerate(self.jobs):
                if k not in self.complete:
                    self.complete.add(k)
                    rest = j.finish()
                    if got and got[-1][0] == k:
                        rest = got.pop()[1] + rest
                    got.append((k, rest, True))
        if self.t_first is None and any(t for _, t, _ in got):
            self.t_first = time.monotonic()
        return got

    def logprobs(self, index: int = 0) -> list[tuple[int, float]]:
        """For a request that asked: (token id, log probability) of the tokens behind the text of sequence ``index``
        given out since the last call (the final one's included), in order; each token once."""
        return self.jobs[index].take_logprobs()

    def cancel(self) -> None:
        """The client cancelled or left: one engine ``stop`` (a no-op once the engine call is over); what the engine
        still sends is counted, not shown, and the request finishes as ``cancelled``."""
        if any([job.cancel() for job in self.jobs]):  # every job told; a stop if any still wanted the engine
            self._stop_engine()

    def _stop_engine(self) -> None:
        self.sessions.link.stop(self.job.id, stop_request_inputs())

    # --- the end (each records the outcome and gives the place back, once) ------------------------------------
    def finish(self) -> None:
        """The final response went out. Time to first token (and so inter-token latency) is recorded for a streamed
        request only: a whole response's first token is its last, and counting it would skew both histograms."""
        job, now = self.job, time.monotonic()
        ttft = (self.t_first or now) - self.t0 if job.req.stream else None
        self._end(RequestOutcome(now - self.t0, len(job.input_ids), self.n_output, ttft, job.finish_reason.value,
                                 cached_tokens=job.cached_tokens))

    def fail(self, err: ZiyaError) -> None:
        """The request ended with ``err``: the engine is stopped if it is still running."""
        self._stop_engine()
        self._end(RequestOutcome.failed(err, time.monotonic() - self.t0))

    def discard(self) -> None:
        """A session never submitted (another prompt of the same response was refused): its place goes back, and it
        records nothing (the response's refusal is recorded once)."""
        if not self.ended:
            self.ended = True
            self.place.release()

    def abandon(self) -> None:
        """The client left before the final response: the engine is stopped, the request counted as cancelled."""
        self.cancel()
        self._end(RequestOutcome(time.monotonic() - self.t0, finish_reason="cancelled"))

    def _end(self, outcome: RequestOutcome) -> None:
        if self.ended:
            return
        self.ended = True
        self.place.release()
        self.sessions.record(outcome)
