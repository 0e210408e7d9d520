"""Triton adapter for the engine stand-ins (reference, synthetic): tensors in, ziya_trt out.

Same inputs and outputs as TensorRT-LLM's ``tensorrt_llm`` model. ``execute`` hands each request to
the engine's in-flight batching loop and returns at once (decoupled). The loop's outputs go out
through an ``Outbox`` (sender threads, so the loop never waits on a send, and a watcher that polls
cancellation, like TensorRT-LLM's ``cancellation_check_period_ms``). A request with ``stop=true``
cancels the in-flight request with the same id, as in TensorRT-LLM.
"""

import json

import triton_python_backend_utils as pb_utils

from ziya_trt.engine.core import EngineOutput
from ziya_trt.engine.factory import build_engine
from ziya_trt.engine.outbox import Outbox
from ziya_trt.errors import ServerError, ZiyaError
from ziya_trt.gauges import GaugeMirror
from ziya_trt.tensors import ENGINE_INPUTS, METRIC_ACTIVE, METRIC_CANCELLED, METRIC_QUEUED, METRIC_TOKENS
from ziya_trt.triton_io import engine_output_arrays, engine_request_from_inputs, read_inputs

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class TritonPythonModel:
    def initialize(self, args):
        cfg = json.loads(args["model_config"])
        self.name = cfg["name"]
        params = {k: v["string_value"] for k, v in cfg.get("parameters", {}).items()}
        self.drain_s = float(params.get("drain_timeout_s", "20"))
        self.engine = build_engine(params, self.name)
        self.outbox = Outbox(
            self._send_output,
            lambda handle: handle[0].is_cancelled(),
            self.engine.cancel,
            threads=int(params["send_threads"]),
            check_period_s=float(params["cancellation_check_period_ms"]) / 1000.0,
            name=self.name,
        )
        self._start_metrics()

    def execute(self, requests):
        for r in requests:
            sender = r.get_response_sender()
            try:
                inputs = read_inputs(pb_utils.get_input_tensor_by_name, r, ENGINE_INPUTS)
                req, stop = engine_request_from_inputs(inputs, r.request_id())
                if stop:
                    self.engine.cancel(r.request_id())
                    sender.send(flags=FINAL)
                    continue
                wanted = set(r.requested_output_names()) or None
                stream = self.outbox.open(req.id, (sender, wanted))
                try:
                    stream.id = self.engine.submit(req, lambda out, st=stream: self.outbox.put(st, out))
                except Exception as e:  # once the stream is open, its sender belongs to the outbox
                    self.outbox.put(stream, EngineOutput([], final=True, error=self._start_error(e)))
            except Exception as e:
                err = self._start_error(e)
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(err.to_wire())), flags=FINAL)
        return None

    def _start_error(self, e: Exception) -> ZiyaError:
        """A typed error as it is; anything else as a generic one (never a traceback to the client)."""
        if isinstance(e, ZiyaError):
            return e
        return ServerError(f"{self.name}: could not start the request ({type(e).__name__})")

    @staticmethod
    def _send_output(handle, out):
        sender, wanted = handle
        if out.error is not None:
            resp = pb_utils.InferenceResponse(error=pb_utils.TritonError(out.error.to_wire()))
        else:
            tensors = [pb_utils.Tensor(k, v) for k, v in engine_output_arrays(out, wanted).items()]
            resp = pb_utils.InferenceResponse(output_tensors=tensors)
        sender.send(resp, flags=FINAL if out.final else 0)

    def _start_metrics(self):
        """One thread owns the metric objects (they are not safe to touch from several threads)."""
        fam = {
            "active": pb_utils.MetricFamily(METRIC_ACTIVE, "requests holding an engine slot", pb_utils.MetricFamily.GAUGE),
            "waiting": pb_utils.MetricFamily(METRIC_QUEUED, "requests waiting for a slot", pb_utils.MetricFamily.GAUGE),
            "generated_tokens": pb_utils.MetricFamily(METRIC_TOKENS, "tokens generated", pb_utils.MetricFamily.GAUGE),
            "cancelled": pb_utils.MetricFamily(METRIC_CANCELLED, "requests cancelled", pb_utils.MetricFamily.GAUGE),
        }
        gauges = {k: f.Metric(labels={"model": self.name}) for k, f in fam.items()}
        self._metric_families = fam
        self._metrics = GaugeMirror(self.engine.stats, gauges)

    def finalize(self):
        self.engine.shutdown(self.drain_s)
        self.outbox.close()
        self._metrics.close()
