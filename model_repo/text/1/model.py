"""Triton adapter for the text front door (BLS): text in, engine call, streamed text out.

Each request runs on its own thread (a plain ``execute`` would serve requests one after another).
It keeps the request's detokeniser state, so streamed text is exact. Cancellation is passed on to
the engine with a TensorRT-LLM ``stop`` request, because Triton does not cancel the inner BLS call.

Two hazards of Triton's Python backend (tritonserver 2.51; the same code is in 25.12) shape this file:
- keeping the BLS ``InferenceRequest`` alive while its responses stream corrupted the stub's heap when
  ~100 streams were cancelled at once, so ``_engine_call`` returns only the response iterator;
- ``exec(decoupled=True)`` takes the stub's response-iterator map mutex while holding the GIL, and a
  thread woken in ``ResponseIterator::Next`` takes the GIL back while holding its iterator's mutex; with
  the stub's response thread between them, that is a lock-order cycle. Without ``_pb`` around ``exec``
  the stub deadlocked in 2 of 11 runs of the 2,000-request test, and with it around ``exec`` alone
  the full suite hung once. So final sends and the closing cancellation check hold it too, and the
  periodic check skips a round while it is busy. It makes ``exec`` calls rare (one at a time), which
  does not rule the cycle out, and caps request starts; see the README's serving-overhead section.
"""

import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from ziya_trt.errors import ServerError, ServerOverloadedError, ZiyaError, from_wire
from ziya_trt.frontdoor import FrontDoor
from ziya_trt.tensors import FRONT_DOOR_INPUTS, METRIC_FRONT_DOOR_INFLIGHT
from ziya_trt.triton_io import engine_inputs_from_request, stop_request_inputs

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
MAX_SKIPPED = 4  # cancellation checks skipped in a row (lock busy) before one waits for the lock
ENGINE_OUT = ["output_ids"]  # the front door counts tokens itself: fewer tensors per token


def _error(e):
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(e.to_wire()))


def _text_response(text, session=None, reason=None):
    out = [pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_))]
    if session is not None:
        out.append(pb_utils.Tensor("num_input_tokens", np.array([len(session.input_ids)], dtype=np.int32)))
        out.append(pb_utils.Tensor("num_output_tokens", np.array([session.n_output], dtype=np.int32)))
    if reason is not None:
        out.append(pb_utils.Tensor("finish_reason", np.array([reason.value.encode()], dtype=np.object_)))
    return pb_utils.InferenceResponse(output_tensors=out)


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        self.name = cfg["name"]
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        self.door = FrontDoor.from_params(params)
        self.engine_name = params["engine_model_name"]
        self.max_inflight = int(params["max_inflight"])
        self.drain_s = float(params.get("drain_timeout_s", "20"))
        self._inflight = threading.BoundedSemaphore(self.max_inflight)
        self._count = 0
        self._count_lock = threading.Lock()
        self._stop = threading.Event()
        # BLS request set-up (see the module docstring), cancellation checks and final sends hold this
        # lock; the streaming sends and response reads do not
        self._pb = threading.Lock()
        self.cancel_check_s = float(params["cancellation_check_period_ms"]) / 1000.0
        self._start_metrics()

    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            if not self._inflight.acquire(blocking=False):
                err = ServerOverloadedError(f"{self.name}: overloaded, {self.max_inflight} requests in flight; retry later")
                sender.send(_error(err), flags=FINAL)  # at once, not behind the lock
                continue
            inputs = {}  # read here, on the stub's main thread, without the lock: execute must never wait on it
            for name in FRONT_DOOR_INPUTS:
                t = pb_utils.get_input_tensor_by_name(r, name)
                if t is not None:
                    inputs[name] = t.as_numpy()
            with self._count_lock:
                self._count += 1
            threading.Thread(target=self._serve, args=(inputs, sender), daemon=True).start()
        return None

    def _start_metrics(self):
        """One thread owns the gauge (metric objects are not safe to touch from several threads)."""
        fam = pb_utils.MetricFamily(METRIC_FRONT_DOOR_INFLIGHT, "text requests in flight", pb_utils.MetricFamily.GAUGE)
        gauge = fam.Metric(labels={"model": self.name})
        self._metric_family = fam

        def loop():
            while not self._stop.wait(0.02):
                with self._pb:
                    gauge.set(float(self._count))

        self._metrics_thread = threading.Thread(target=loop, name="metrics", daemon=True)
        self._metrics_thread.start()

    def finalize(self):
        """Shutdown: let in-flight requests finish (the engine drains too), up to the drain timeout."""
        deadline = time.monotonic() + self.drain_s
        while self._count and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._metrics_thread.join(timeout=1)

    def _send(self, sender, response=None, final=False):
        if not final:  # the streaming hot path: one request's sender, no cancellation involved
            sender.send(response)
            return
        with self._pb:
            if response is None:
                sender.send(flags=FINAL)
            else:
                sender.send(response, flags=FINAL)

    def _cancelled(self, sender, skipped: int = MAX_SKIPPED) -> bool | None:
        """``is_cancelled()`` under the lock. While streaming (``skipped`` < MAX_SKIPPED) it returns None
        instead of waiting when another thread holds the lock, which can be for as long as an engine takes
        to start a queued request; after MAX_SKIPPED skips in a row it waits, so a cancellation is seen."""
        if not self._pb.acquire(blocking=skipped >= MAX_SKIPPED):
            return None
        try:
            return sender.is_cancelled()
        finally:
            self._pb.release()

    def _serve(self, inputs, sender):
        try:
            self._run(inputs, sender)
        except ZiyaError as e:
            self._send(sender, _error(e), final=True)
        except Exception as e:  # never a traceback to the client
            self._send(sender, _error(ServerError(f"{self.name}: request failed ({type(e).__name__})")), final=True)
        finally:
            with self._count_lock:
                self._count -= 1
            self._inflight.release()

    def _engine_call(self, arrays, request_id):
        with self._pb:
            call = pb_utils.InferenceRequest(
                model_name=self.engine_name,
                requested_output_names=ENGINE_OUT,
                inputs=[pb_utils.Tensor(k, v) for k, v in arrays.items()],
                request_id=request_id,
            )
            return iter(call.exec(decoupled=True))

    def _responses(self, it):
        """The engine's responses as (token ids, error message)."""
        for resp in it:
            if resp.has_error():
                yield None, resp.error().message()
                return
            ids = pb_utils.get_output_tensor_by_name(resp, "output_ids")
            yield (ids.as_numpy().reshape(-1).tolist() if ids is not None else []), None

    def _run(self, inputs, sender):
        s = self.door.open(inputs)
        it = self._engine_call(engine_inputs_from_request(s.engine_request), s.id)
        pending, engine_tokens, stop_sent = [s.prefix] if s.prefix else [], 0, False
        next_check, skipped = 0.0, 0  # is_cancelled() is an IPC round trip under the lock: once per period
        for tokens, error in self._responses(it):
            if error is not None:
                raise from_wire(error) or ServerError(f"{self.engine_name}: {error}")
            engine_tokens += len(tokens)
            if tokens and not s.stopped_early:
                pending.append(s.feed(tokens))
            now = time.monotonic()
            check = now >= next_check
            if check:
                next_check = now + self.cancel_check_s
            cancelled = None
            if check and not stop_sent and not s.stopped_early:
                cancelled = self._cancelled(sender, skipped)
                skipped = skipped + 1 if cancelled is None else 0
            if not stop_sent and (s.stopped_early or cancelled):
                s.cancelled = not s.stopped_early
                for _ in self._responses(self._engine_call(stop_request_inputs(), s.id)):
                    pass
                stop_sent = True
            if s.req.stream and not stop_sent and pending and any(pending):
                self._send(sender, _text_response("".join(pending)))
                pending = []
        if self._cancelled(sender):
            s.cancelled = True
        pending.append(s.finish(engine_tokens))
        with self._pb:
            response = _text_response("".join(pending), s, s.finish_reason)
        self._send(sender, response, final=True)
