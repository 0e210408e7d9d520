"""The engine stand-ins' side of the ``tensorrt_llm`` interface, as one plain unit: tensors in, the
engine's in-flight batching loop, responses out.

Each request goes to the engine loop at once (the model is decoupled). The loop's outputs are sent
from an ``Outbox`` (sender threads, so the loop never waits on a send, and a watcher that polls
cancellation, like TensorRT-LLM's ``cancellation_check_period_ms``). A request with ``stop=true``
cancels the in-flight request with the same id, as in TensorRT-LLM. Nothing here imports Triton: the
adapter (``model_repo/engine``) only reads tensors and hands in a ``TritonResponder``.
"""

from __future__ import annotations

from typing import Callable

from pathlib import Path

from ..engine.loop import EngineLoop
from ..engine.request import EngineOutput
from ..errors import typed
from ..wire.arrays import engine_output_arrays, engine_request_from_inputs
from .drain import DrainWatch, drain_file
from .outbox import Outbox
from .request_metrics import ENGINE_QUEUE_TIME
from .responder import Responder


class EngineService:
    def __init__(self, engine: EngineLoop, *, name: str, send_threads: int = 4, cancel_check_s: float = 0.05,
                 drain_s: float = 20.0, drain_path: str | Path | None = None):
        self.engine, self.name, self.drain_s = engine, name, drain_s
        self.outbox = Outbox(self._send, lambda handle: handle[0].is_cancelled(), engine.cancel,
                             threads=send_threads, check_period_s=cancel_check_s, name=name)
        # draining: no new requests; at the deadline, what is left fails with a typed error
        self.drain = DrainWatch(drain_path, engine.stop_admitting, lambda: engine.shutdown(0),
                                name=f"{name}-drain") if drain_path else None

    @classmethod
    def from_config(cls, cfg, name: str, repo: str | Path | None = None,
                    observe: Callable[[str, float], None] | None = None) -> "EngineService":
        """From a ``ServeConfig``; ``repo`` is the model repository (where the launcher's drain file goes);
        ``observe(metric, value)`` gets each request's wait for a slot (``ziya_engine_queue_time_seconds``)."""
        from ..engine.factory import build_engine

        engine = build_engine(cfg, name)
        if observe is not None:
            engine.on_queue_time = lambda s: observe(ENGINE_QUEUE_TIME.name, s)
        return cls(engine, name=name, send_threads=cfg.send_threads,
                   cancel_check_s=cfg.cancel_check_ms / 1000.0, drain_s=cfg.drain_timeout_s,
                   drain_path=drain_file(repo) if repo is not None else None)

    def start(self, responder: Responder, read_inputs: Callable[[], dict], request_id: str,
              wanted: set[str] | None = None) -> None:
        """Queue one request (or stop one, for ``stop=true``); every failure is answered."""
        what = f"{self.name}: could not start the request"
        try:
            req, stop = engine_request_from_inputs(read_inputs(), request_id)
            if stop:
                self.engine.cancel(request_id)
                responder.send(final=True)
                return
            st = self.outbox.open(req.id, (responder, wanted))
            try:
                st.id = self.engine.submit(req, lambda out, st=st: self.outbox.put(st, out))
            except Exception as e:  # once the stream is open, its responder belongs to the outbox
                self.outbox.put(st, EngineOutput([], final=True, error=typed(e, what)))
        except Exception as e:
            responder.send(error=typed(e, what), final=True)

    @staticmethod
    def _send(handle, out: EngineOutput) -> None:
        responder, wanted = handle
        if out.error is not None:
            responder.send(error=out.error, final=out.final)
        else:
            responder.send(engine_output_arrays(out, wanted), final=out.final)

    def stats(self) -> dict:
        return self.engine.stats()

    def finalize(self) -> None:
        """The model is being unloaded: stop admitting, let running requests finish within the drain timeout,
        then stop sending."""
        if self.drain is not None:
            self.drain.close()
        self.engine.shutdown(self.drain_s)
        self.outbox.close()
