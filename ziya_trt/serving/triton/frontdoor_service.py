"""The text front door's request lifecycle, as one plain unit: requests in (inputs and a
``Responder``), engine calls out over an ``EngineLink``, engine events in, text responses and stop
signals out.

- **Admission**: a place in the engine's one budget (``admission``: shared with the other front-door
  instances and the OpenAI API), or ``[ziya:overloaded]`` before the inputs are read or tokenized.
- **Open requests**: each is registered until its one final response has gone out.
- **Responses** go out through an ``Outbox``: sender threads keep each request's responses in order,
  merge what piles up, and send a first response ahead of the queue. Its watcher polls cancellation,
  which becomes a TensorRT-LLM ``stop`` request to the engine, as does a stop string completing.
- **Drain**: on shutdown, open requests may finish within the drain timeout.

There is no thread and no lock per request. Nothing here imports Triton: the adapter
(``model_repo/text``) only reads tensors and hands in a ``TritonResponder``; tests use fakes.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable

from ...engine.request import EngineOutput
from ...errors import ServerError, ServerShuttingDownError, from_wire, typed
from ...wire.arrays import engine_inputs, reused_blocks, stop_request_inputs, text_outputs
from ...wire.tensors import FRONT_DOOR_ENGINE_OUTPUTS
from ..admission import LocalBudget, Place, SharedBudget, budget_file, refusal
from ..config import ConfigError
from ..drain import DrainWatch, drain_file
from ..engine_link import GRPC_URL_ENV, EngineLink
from ..frontdoor import FrontDoor, TextJob
from .outbox import Outbox, Sent
from ..request_metrics import RecordFn, RequestOutcome
from .responder import Responder


class _Request:
    __slots__ = ("job", "responder", "final_sent", "stream", "t0", "t_first", "place")

    def __init__(self, job: TextJob, responder: Responder, t0: float, place: Place):
        self.job, self.responder, self.final_sent, self.stream = job, responder, False, None
        self.t0, self.t_first, self.place = t0, None, place


class FrontDoorService:
    def __init__(self, door: FrontDoor, link, *, max_inflight: int, engine_name: str, name: str = "ziya",
                 send_threads: int = 4, cancel_check_s: float = 0.05, drain_s: float = 20.0,
                 drain_path: str | Path | None = None, record: RecordFn | None = None, budget=None):
        """``link`` is an ``EngineLink`` or anything with its ``submit``/``stop``/``close``; ``drain_path`` the
        launcher's drain file (``drain.py``); ``record`` takes each request's ``RequestOutcome`` (metrics);
        ``budget`` the admission budget shared with the other fronts (default: ``max_inflight`` places here)."""
        self.record = record or (lambda outcome: None)
        self.door, self.link, self.name, self.engine_name = door, link, name, engine_name
        self.drain_s = drain_s
        self.outbox = Outbox(self._deliver, lambda r: r.responder.is_cancelled(), self._on_cancel,
                             threads=send_threads, check_period_s=cancel_check_s, name=name)
        self.budget = budget or LocalBudget(max_inflight)
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
        """Admit, validate and tokenize one request and call the engine; every failure is answered."""
        t0 = time.monotonic()
        if self.drain is not None and self.drain.draining:
            self._refuse(responder, ServerShuttingDownError(f"{self.name}: shutting down, not taking requests"))
            return
        place = self.budget.try_acquire()
        if place is None:
            self._refuse(responder, refusal(self.name, self.budget.size))
            return
        try:
            job = self.door.open(read_inputs())
        except Exception as e:
            place.release()
            self._refuse(responder, typed(e, f"{self.name}: could not start the request"))
            return
        req = _Request(job, responder, t0, place)
        st = req.stream = self.outbox.open(job.id, req)
        with self._open_lock:
            self._open[job.id] = req

        def on_event(outputs, error, final, st=st):
            if error is not None:
                err = from_wire(error) or ServerError(f"{self.engine_name}: {error}")
                self.outbox.put(st, EngineOutput([], final=True, error=err))
                return
            ids = outputs.get("output_ids")
            self.outbox.put(st, EngineOutput(ids.reshape(-1).tolist() if ids is not None else [], final=final,
                                             reused_blocks=reused_blocks(outputs)))

        try:
            self.link.submit(job.id, engine_inputs(job.engine_request), on_event)
        except Exception as e:  # once the stream is open, its responder belongs to the outbox
            self.outbox.put(st, EngineOutput([], final=True, error=typed(e, f"{self.name}: engine unavailable")))

    def _refuse(self, responder: Responder, err) -> None:
        responder.send(error=err, final=True)
        self.record(RequestOutcome.failed(err))

    def stats(self) -> dict[str, int]:
        return {"inflight": len(self._open)}

    # --- cancellation and responses (outbox threads) ----------------------------------------------
    def _on_cancel(self, request_id: str) -> None:
        with self._open_lock:
            req = self._open.get(request_id)
        if req is not None and req.job.cancel():
            self.link.stop(request_id, stop_request_inputs())

    def _deliver(self, req: _Request, out: EngineOutput) -> Sent:
        """Runs on an outbox sender thread, one request at a time; says what went out."""
        if out.error is None:
            try:
                return self._respond(req, out)
            except Exception as e:  # a failed send (the client is gone) or a bug: never a traceback
                out = EngineOutput([], final=True, error=typed(e, f"{self.name}: request failed"))
        self.link.stop(req.job.id, stop_request_inputs())  # a no-op once the engine call is over
        try:
            self._send_final(req, error=out.error)
        except Exception:
            pass  # the client is gone: there is no one to tell
        self.record(RequestOutcome.failed(out.error, time.monotonic() - req.t0))
        return Sent.ENDED

    def _respond(self, req: _Request, out: EngineOutput) -> Sent:
        job = req.job
        job.reused_blocks = max(job.reused_blocks, out.reused_blocks)
        text, stop = job.push(out.tokens)
        if stop:
            self.link.stop(job.id, stop_request_inputs())
        if not out.final:
            if not text:
                return Sent.HELD  # the first text still goes ahead of other streams' responses
            req.responder.send(text_outputs(text))
            if req.t_first is None:
                req.t_first = time.monotonic()
            return Sent.RESPONDED
        if not job.cancelled and req.responder.is_cancelled():
            job.cancel()
        text += job.finish()
        outputs = text_outputs(text, len(job.input_ids), job.n_output, job.finish_reason.value, job.turns_dropped,
                               job.cached_tokens)
        self._send_final(req, outputs=outputs)
        now = time.monotonic()
        self.record(RequestOutcome(now - req.t0, len(job.input_ids), job.n_output,
                                   (req.t_first or now) - req.t0, job.finish_reason.value,
                                   cached_tokens=job.cached_tokens))
        return Sent.RESPONDED

    def _send_final(self, req: _Request, outputs=None, error=None) -> None:
        """The request's one final response (never a second, even after a failed send); then it is closed."""
        try:
            if not req.final_sent:
                req.final_sent = True
                req.responder.send(outputs, error, final=True)
        finally:
            self._close(req)

    def _close(self, req: _Request) -> None:
        with self._open_lock:
            if self._open.pop(req.job.id, None) is None:
                return  # already closed
        req.place.release()

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
