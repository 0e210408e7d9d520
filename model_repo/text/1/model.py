"""Triton adapter for the text front door: text in, engine call, streamed text out.

``execute`` validates and tokenizes each request, then hands it to the ``EngineLink``, which calls the
engine model over the server's own gRPC endpoint (a stream per call; see ``engine_link`` for why
not BLS). The engine's responses are turned into text and sent from an ``Outbox``: sender
threads keep each request's responses in order, merge what piles up, and send a first response ahead
of the queue; its watcher polls cancellation, which is passed on to the engine as a TensorRT-LLM
``stop`` request. No per-request thread, and no lock held across a send.
"""

import json
import os
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from ziya_trt.engine.core import EngineOutput
from ziya_trt.engine.outbox import Outbox, Sent
from ziya_trt.engine_link import GRPC_URL_ENV, EngineLink
from ziya_trt.errors import ServerError, ServerOverloadedError, ZiyaError, from_wire
from ziya_trt.frontdoor import FrontDoor, TextJob
from ziya_trt.gauges import GaugeMirror
from ziya_trt.serve_config import ConfigError
from ziya_trt.tensors import FRONT_DOOR_ENGINE_OUTPUTS, FRONT_DOOR_INPUTS, METRIC_FRONT_DOOR_INFLIGHT
from ziya_trt.triton_io import engine_inputs_from_request, read_inputs, stop_request_inputs

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


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


class _Request:
    __slots__ = ("job", "sender", "final_sent")

    def __init__(self, job, sender):
        self.job, self.sender, self.final_sent = job, sender, False


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        self.name = cfg["name"]
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        self.door = FrontDoor.from_params(params)
        self.engine_name = params["engine_model_name"]
        self.max_inflight = int(params["max_inflight"])
        self.drain_s = float(params.get("drain_timeout_s", "20"))
        url = params.get("engine_grpc_url") or os.environ.get(GRPC_URL_ENV)
        if not url:
            raise ConfigError(
                f"{self.name}: the front door calls {self.engine_name} over this server's gRPC endpoint; set the "
                f"engine_grpc_url parameter (ServeConfig.grpc_url) or {GRPC_URL_ENV} to its host:port"
            )
        self.link = EngineLink(url, self.engine_name, FRONT_DOOR_ENGINE_OUTPUTS, name=self.name)
        self.outbox = Outbox(
            self._deliver,
            lambda r: r.sender.is_cancelled(),
            self._on_cancel,
            threads=int(params["send_threads"]),
            check_period_s=float(params["cancellation_check_period_ms"]) / 1000.0,
            name=self.name,
        )
        self._inflight = threading.BoundedSemaphore(self.max_inflight)
        self._open = {}  # request id -> _Request
        self._open_lock = threading.Lock()
        self._start_metrics()

    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            if not self._inflight.acquire(blocking=False):
                err = ServerOverloadedError(f"{self.name}: overloaded, {self.max_inflight} requests in flight; retry later")
                sender.send(_error(err), flags=FINAL)
                continue
            try:
                inputs = read_inputs(pb_utils.get_input_tensor_by_name, r, FRONT_DOOR_INPUTS)
                self._start(self.door.open(inputs), sender)
            except Exception as e:
                self._inflight.release()
                sender.send(_error(self._typed(e, "could not start the request")), flags=FINAL)
        return None

    def _typed(self, e, what):
        """A typed error as it is; anything else as a generic one (never a traceback to the client)."""
        return e if isinstance(e, ZiyaError) else ServerError(f"{self.name}: {what} ({type(e).__name__})")

    def _start(self, session, sender):
        req = _Request(TextJob(session), sender)
        st = self.outbox.open(session.id, req)
        with self._open_lock:
            self._open[session.id] = req

        def on_event(outputs, error, final, st=st):
            if error is not None:
                err = from_wire(error) or ServerError(f"{self.engine_name}: {error}")
                self.outbox.put(st, EngineOutput([], final=True, error=err))
                return
            ids = outputs.get("output_ids")
            self.outbox.put(st, EngineOutput(ids.reshape(-1).tolist() if ids is not None else [], final=final))

        try:
            self.link.submit(session.id, engine_inputs_from_request(session.engine_request), on_event)
        except Exception as e:  # once the stream is open, its sender belongs to the outbox
            self.outbox.put(st, EngineOutput([], final=True, error=self._typed(e, "engine unavailable")))

    def _on_cancel(self, request_id):
        with self._open_lock:
            req = self._open.get(request_id)
        if req is not None and req.job.cancel():
            self.link.stop(request_id, stop_request_inputs())

    def _deliver(self, req, out):
        """Runs on an outbox sender thread, one request at a time; says what went out."""
        if out.error is None:
            try:
                return self._respond(req, out)
            except Exception as e:  # a failed send (the client is gone) or a bug: never a traceback
                out = EngineOutput([], final=True, error=self._typed(e, "request failed"))
        self.link.stop(req.job.session.id, stop_request_inputs())  # a no-op once the engine call is over
        try:
            self._send_final(req, _error(out.error))
        except Exception:
            pass  # the client is gone: there is no one to tell
        return Sent.ENDED

    def _respond(self, req, out):
        job = req.job
        text, stop = job.push(out.tokens)
        if stop:
            self.link.stop(job.session.id, stop_request_inputs())
        if not out.final:
            if not text:
                return Sent.HELD  # the first text still goes ahead of other streams' responses
            req.sender.send(_text_response(text))
            return Sent.RESPONDED
        if not job.cancelled and req.sender.is_cancelled():
            job.cancel()
        s = job.session
        self._send_final(req, _text_response(text + job.finish(), s, s.finish_reason))
        return Sent.RESPONDED

    def _send_final(self, req, response):
        """The request's one final response (never a second, even after a failed send); then it is closed."""
        try:
            if not req.final_sent:
                req.final_sent = True
                req.sender.send(response, flags=FINAL)
        finally:
            self._close(req)

    def _close(self, req):
        with self._open_lock:
            if self._open.pop(req.job.session.id, None) is None:
                return  # already closed
        self._inflight.release()

    def _start_metrics(self):
        """One thread owns the gauge (metric objects are not safe to touch from several threads)."""
        fam = pb_utils.MetricFamily(METRIC_FRONT_DOOR_INFLIGHT, "text requests in flight", pb_utils.MetricFamily.GAUGE)
        gauge = fam.Metric(labels={"model": self.name})
        self._metric_family = fam

        self._metrics = GaugeMirror(lambda: {"inflight": len(self._open)}, {"inflight": gauge})

    def finalize(self):
        """Shutdown: let in-flight requests finish (the engine drains too), up to the drain timeout."""
        deadline = time.monotonic() + self.drain_s
        while self._open and time.monotonic() < deadline:
            time.sleep(0.05)
        self._metrics.close()
        self.link.close()
        self.outbox.close(timeout_s=max(0.5, deadline - time.monotonic()))
