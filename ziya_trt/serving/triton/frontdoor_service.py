"""The text front door's service, in its Python stub: requests in (inputs and a ``Responder``), text responses
out. Each request is a ``session.TextSession`` (admission, tokenising, the engine call, stop strings, cancellation,
its one outcome: the same lifecycle as the OpenAI API's); this file only moves its outputs to Triton's responses.

- **Admission**: a place in the engine's one budget (shared with the other front-door instances and the OpenAI API),
  or ``[ziya:overloaded]`` before the inputs are read or tokenised; ``[ziya:shutting_down]`` while draining.
- **Open requests**: each is registered until its one final response has gone out.
- **Responses** go out through an ``Outbox``: sender threads keep each request's responses in order, merge what piles
  up, and send a first response ahead of the queue. Its watcher polls Triton's cancellation flag, which becomes the
  session's ``cancel``.
- **Drain**: on shutdown, open requests may finish within the drain timeout.

There is no thread and no lock per request. Nothing here imports Triton: the adapter (``model_repo/text``) only reads
tensors and hands in a ``TritonResponder``; tests use fakes.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from ...engine.request import EngineOutput
from ...errors import ServerShuttingDownError, ZiyaError, typed
from ...wire.arrays import text_outputs
from ...wire.tensors import FRONT_DOOR_ENGINE_OUTPUTS, FRONT_DOOR_OUTPUTS
from ..admission import LocalBudget, Place, SharedBudget, budget_file
from ..config import ConfigError
from ..drain import DrainWatch, drain_file
from ..engine_link import GRPC_URL_ENV, EngineLink
from ..frontdoor import FrontDoor
from ..request_metrics import RecordFn
from ..session import Sessions, TextSession
from .outbox import Outbox, Sent
from .responder import Responder


class _Request:
    __slots__ = ("session", "responder", "final_sent", "stream")

    def __init__(self, session: TextSession, responder: Responder):
        self.session, self.responder, self.final_sent, self.stream = session, responder, False, None


class FrontDoorService:
    def __init__(self, door: FrontDoor, link, *, max_inflight: int, engine_name: str, name: str = "ziya",
                 send_threads: int = 4, cancel_check_s: float = 0.05, drain_s: float = 20.0,
                 drain_path: str | Path | None = None, record: RecordFn | None = None, budget=None):
        """``link`` is an ``EngineLink`` or anything with its ``submit``/``stop``/``close``; ``drain_path`` the
        launcher's drain file (``drain.py``); ``record`` takes each request's ``RequestOutcome`` (metrics);
        ``budget`` the admission budget shared with the other fronts (default: ``max_inflight`` places here)."""
        self.link, self.name, self.drain_s = link, name, drain_s
        self.sessions = Sessions(door, link, budget or LocalBudget(max_inflight), record or (lambda outcome: None),
                                 name, engine_name)
        self.outbox = Outbox(self._deliver, lambda r: r.responder.is_cancelled(), self._on_cancel,
                             threads=send_threads, check_period_s=cancel_check_s, name=name)
        self._open: dict[str, _Request] = {}
        self._open_lock = threading.Lock()
        self.drain = DrainWatch(drain_path, lambda: None, self._shut_down, name=f"{name}-drain") if drain_path else None

    @classmethod
    def from_config(cls, cfg, name: str, repo: str | Path | None = None,
                    record: RecordFn | None = None) -> "FrontDoorService":
        """From a ``ServeConfig``: the engine is called over the server's gRPC address (``cfg.grpc_url``,
        else the launcher's ``ZIYA_TRT_GRPC_URL``)."""
        url = cfg.grpc_url or os.environ.get(GRPC_URL_ENV)
        if not url:
            raise ConfigError(
                f"{name}: the front door calls {cfg.engine_name} over this server's gRPC endpoint; set "
                f"ServeConfig.grpc_url (`ziya-trt serve --render-only --grpc-port N`) or {GRPC_URL_ENV} to its host:port"
            )
        link = EngineLink(url, cfg.engine_name, FRONT_DOOR_ENGINE_OUTPUTS, name=name)
        size = cfg.admission_budget
        return cls(FrontDoor.from_config(cfg), link, max_inflight=size,
                   engine_name=cfg.engine_name, name=name, send_threads=cfg.send_threads,
                   cancel_check_s=cfg.cancel_check_ms / 1000.0, drain_s=cfg.drain_timeout_s,
                   drain_path=drain_file(repo) if repo is not None else None, record=record,
                   budget=SharedBudget(budget_file(repo), size) if repo is not None else None)

    # --- requests in ----------------------------------------------------------------------------
    def start(self, responder: Responder, read_inputs: Callable[[], dict]) -> None:
        """Admit, validate and tokenise one request and call the engine; every failure is answered."""
        t0 = time.monotonic()
        try:
            if self.drain is not None and self.drain.draining:
                raise ServerShuttingDownError(f"{self.name}: shutting down, not taking requests")
            place = self.sessions.admit()  # before the inputs are read: a refusal costs no tokenising
            session = self.sessions.open(place, lambda door: door.open(read_inputs()), t0)
            self._admit_sequences(session)
        except Exception as e:
            err = typed(e, f"{self.name}: could not start the request")
            responder.send(error=err, final=True)
            self.sessions.refused(err)
            return
        req = _Request(session, responder)
        st = req.stream = self.outbox.open(session.id, req)
        with self._open_lock:
            self._open[session.id] = req
        try:
            session.submit(lambda out: self.outbox.put(st, out))
        except Exception as e:  # once the stream is open, its responder belongs to the outbox
            self.outbox.put(st, EngineOutput([], final=True, error=typed(e, f"{self.name}: engine unavailable")))

    def _admit_sequences(self, session) -> None:
        """A place for each further sequence of a request of num_return_sequences > 1 (each takes an engine slot)."""
        n = session.job.req.n
        if n == 1:
            return
        try:
            more = self.sessions.admit(n - 1)
        except Exception:
            session.discard()
            raise
        first = session.place
        session.place = Place(lambda: (first.release(), more.release()))

    def stats(self) -> dict[str, int]:
        return {"inflight": len(self._open)}

    # --- cancellation and responses (outbox threads) ----------------------------------------------
    def _on_cancel(self, request_id: str) -> None:
        with self._open_lock:
            req = self._open.get(request_id)
        if req is not None:
            req.session.cancel()

    def _deliver(self, req: _Request, out: EngineOutput) -> Sent:
        """Runs on an outbox sender thread, one request at a time; says what went out."""
        session = req.session
        try:
            if out.final and not session.job.cancelled and req.responder.is_cancelled():
                session.cancel()  # cancelled after the watcher last looked: the text ends as cancelled
            if len(session.jobs) > 1:
                return self._deliver_choices(req, out)
            text = session.push(out)
            if not out.final:
                if not text:
                    return Sent.HELD  # the first text still goes ahead of other streams' responses
                req.responder.send(text_outputs(text))
                return Sent.RESPONDED
            job = session.job
            self._send_final(req, outputs=text_outputs(text, len(job.input_ids), job.n_output,
                                                       job.finish_reason.value, job.turns_dropped, job.cached_tokens))
            session.finish()
            return Sent.RESPONDED
        except Exception as e:  # the engine's error, a failed send (the client is gone) or a bug: never a traceback
            err = e if isinstance(e, ZiyaError) else typed(e, f"{self.name}: request failed")
        try:
            self._send_final(req, error=err)
        except Exception:
            pass  # the client is gone: there is no one to tell
        session.fail(err)
        return Sent.ENDED

    def _deliver_choices(self, req: _Request, out: EngineOutput) -> Sent:
        """A request of several sequences: each response one sequence's text with its ``sequence_index`` (as the
        tensorrt_llm_bls model answers), a sequence's last one with its counts and finish reason; the final flag on a
        bare last response once every sequence has ended."""
        session, index = req.session, FRONT_DOOR_OUTPUTS["sequence_index"]
        sent = False
        for i, text, done in session.push_choices(out):
            job = session.jobs[i]
            if not (text or done):
                continue
            outputs = text_outputs(text, len(job.input_ids), job.n_output, job.finish_reason.value, job.turns_dropped,
                                   job.cached_tokens) if done else text_outputs(text)
            outputs["sequence_index"] = index.vector(i)
            req.responder.send(outputs)
            sent = True
        if out.final:
            self._send_final(req)
            session.finish()
            return Sent.RESPONDED
        return Sent.RESPONDED if sent else Sent.HELD

    def _send_final(self, req: _Request, outputs=None, error=None) -> None:
        """The request's one final response (never a second, even after a failed send); then it is closed."""
        try:
            if not req.final_sent:
                req.final_sent = True
                req.responder.send(outputs, error, final=True)
        finally:
            with self._open_lock:
                self._open.pop(req.session.id, None)

    # --- shutdown ----------------------------------------------------------------------------------
    def _shut_down(self) -> None:
        """The drain deadline has passed: end every open request with a typed error."""
        with self._open_lock:
            left = list(self._open.values())
        for req in left:
            err = ServerShuttingDownError(f"{self.name}: shut down before the request finished")
            self.outbox.put(req.stream, EngineOutput([], final=True, error=err))

    def finalize(self) -> None:
        """The model is being unloaded: let open requests finish (the engine drains too), up to the drain
        timeout; then stop."""
        deadline = time.monotonic() + self.drain_s
        while self._open and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._open:
            self._shut_down()
        if self.drain is not None:
            self.drain.close()
        self.link.close()
        self.outbox.close(timeout_s=max(0.5, deadline - time.monotonic()))
