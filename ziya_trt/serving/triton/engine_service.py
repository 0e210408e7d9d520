"""The engine stand-ins' side of the ``tensorrt_llm`` interface, as one plain unit: tensors in, the
engine's in-flight batching loop, responses out.

Each request goes to the engine loop at once (the model is decoupled). The loop's outputs are sent
from an ``Outbox`` (sender threads, so the loop never waits on a send, and a watcher that polls
cancellation, like TensorRT-LLM's ``cancellation_check_period_ms``). A request with ``stop=true``
cancels the in-flight request with the same id, as in TensorRT-LLM. A request of batch B is B engine
requests whose responses go out as they come, ``batch_index`` on each, the final flag with the last
(``BatchResponder``), as the backend answers one. A request that sets ``return_log_probs`` gets every generated
token's log probability so far in each response that asks for ``output_log_probs``/``cum_log_probs``, beside only its
new tokens, as the executor keeps them (``wire.arrays.engine_output_arrays``). A request of ``num_return_sequences`` N
is N sequences in the engine loop; each response is one sequence's, ``sequence_index`` on it, the final flag on the
last sequence's end only (contracts/num-return-sequences.json). The backend's rules on the loaded config and on each
request (``backend_rules``) fail here as they would on a GPU. Nothing here imports Triton: the adapter
(``model_repo/engine``) only reads tensors and hands in a ``TritonResponder``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from ...engine.loop import EngineLoop
from ...engine.request import EngineOutput
from ...errors import typed
from ...wire.arrays import engine_output_arrays, engine_requests_from_inputs
from .backend_rules import LoadedModel
from ..drain import DrainWatch, drain_file
from .outbox import Outbox
from ..request_metrics import ENGINE_QUEUE_TIME
from .responder import Responder


class EngineService:
    def __init__(self, engine: EngineLoop, *, name: str, send_threads: int = 4, cancel_check_s: float = 0.05,
                 drain_s: float = 20.0, drain_path: str | Path | None = None, model: LoadedModel | None = None):
        """``model``: the loaded config, whose backend rules each request must meet (None: no config to check)."""
        self.engine, self.name, self.drain_s, self.model = engine, name, drain_s, model
        self._batches: dict[str, list[str]] = {}  # a batched request's id: its rows' engine ids
        self._batches_lock = threading.Lock()
        self.outbox = Outbox(self._send, lambda handle: handle[0].is_cancelled(), engine.cancel,
                             threads=send_threads, check_period_s=cancel_check_s, name=name)
        # draining: no new requests; at the deadline, what is left fails with a typed error
        self.drain = DrainWatch(drain_path, engine.stop_admitting, lambda: engine.shutdown(0),
                                name=f"{name}-drain") if drain_path else None

    @classmethod
    def from_config(cls, cfg, name: str, repo: str | Path | None = None,
                    observe: Callable[[str, float], None] | None = None,
                    model_config: str | dict | None = None) -> "EngineService":
        """From a ``ServeConfig``; ``repo`` is the model repository (where the launcher's drain file goes);
        ``observe(metric, value)`` gets each request's wait for a slot (``ziya_engine_queue_time_seconds``);
        ``model_config`` is the loaded config (Triton's JSON): the model refuses to load where the tensorrt_llm
        backend would."""
        from ...engine.factory import build_engine

        model = None
        if model_config is not None:
            model = LoadedModel.from_model_config(model_config)
            model.check_load()
        engine = build_engine(cfg, name, tokenizer_info=model.guided_tokenizer_info if model is not None else None)
        if observe is not None:
            engine.on_queue_time = lambda s: observe(ENGINE_QUEUE_TIME.name, s)
        return cls(engine, name=name, send_threads=cfg.send_threads,
                   cancel_check_s=cfg.cancel_check_ms / 1000.0, drain_s=cfg.drain_timeout_s,
                   drain_path=drain_file(repo) if repo is not None else None, model=model)

    def start(self, responder: Responder, read_inputs: Callable[[], dict], request_id: str,
              wanted: set[str] | None = None) -> None:
        """Queue one request (or stop one, for ``stop=true``); every failure is answered."""
        what = f"{self.name}: could not start the request"
        try:
            reqs, stop = engine_requests_from_inputs(read_inputs(), request_id)
            if stop:  # the backend answers a stop request with one empty final response
                for rid in self._rows(request_id):
                    self.engine.cancel(rid)
                responder.send(final=True)
                return
            if self.model is not None:
                self.model.check_request(wanted, any(r.return_perf_metrics for r in reqs))
        except Exception as e:
            responder.send(error=typed(e, what), final=True)
            return
        if len(reqs) > 1:
            responder = BatchResponder(responder, len(reqs), lambda: self._forget_batch(request_id))
            if request_id:
                with self._batches_lock:
                    self._batches[request_id] = [r.id for r in reqs]
        for b, req in enumerate(reqs):
            # each sequence's log probabilities so far (the executor's mLogProbs), by sequence index
            log_probs = {} if req.return_log_probs else None
            several = req.num_return_sequences > 1  # only then does a response say which sequence it is
            st = self.outbox.open(req.id, (responder, wanted, b if len(reqs) > 1 else None, log_probs, several))
            try:
                st.id = self.engine.submit(req, lambda out, st=st: self.outbox.put(st, out))
            except Exception as e:  # once the stream is open, its responder belongs to the outbox
                self.outbox.put(st, EngineOutput([], final=True, error=typed(e, what)))

    def _rows(self, request_id: str) -> list[str]:
        with self._batches_lock:
            return self._batches.get(request_id) or [request_id]

    def _forget_batch(self, request_id: str) -> None:
        with self._batches_lock:
            self._batches.pop(request_id, None)

    @staticmethod
    def _send(handle, out: EngineOutput) -> None:
        responder, wanted, batch_index, log_probs, several = handle
        if out.error is not None:
            responder.send(error=out.error, final=out.final)
            return
        so_far = None
        if log_probs is not None:
            so_far = log_probs.setdefault(out.sequence_index, [])
            so_far.extend(out.log_probs or ())
        responder.send(engine_output_arrays(out, wanted, batch_index, so_far,
                                            out.sequence_index if several else None), final=out.final)

    def stats(self) -> dict:
        return self.engine.stats()

    def finalize(self) -> None:
        """The model is being unloaded: stop admitting, let running requests finish within the drain timeout,
        then stop sending."""
        if self.drain is not None:
            self.drain.close()
        self.engine.shutdown(self.drain_s)
        self.outbox.close()


class BatchResponder:
    """The rows of one batched request answer through its one response sender: each row's responses go out as they
    come, and only the last row's final response carries the final flag (the backend's ``pendingBatchedRequestIds``).
    Sends are serialised so that nothing follows the final one."""

    __slots__ = ("_responder", "_left", "_lock", "_on_done")

    def __init__(self, responder: Responder, rows: int, on_done: Callable[[], None]):
        self._responder, self._left, self._on_done = responder, rows, on_done
        self._lock = threading.Lock()

    def send(self, outputs=None, error=None, final: bool = False) -> None:
        with self._lock:
            if final:
                self._left -= 1
            last = final and self._left == 0
            if outputs is None and error is None and final and not last:
                return  # a row's bare final: nothing to say until the last row ends
            self._responder.send(outputs, error, last)
        if last:
            self._on_done()

    def is_cancelled(self) -> bool:
        return self._responder.is_cancelled()
