"""Triton adapter for the engine stand-ins (reference, synthetic): reads tensors, hands them to
``EngineService``. Loaded from the same rendered config as TensorRT-LLM's ``tensorrt_llm`` model (only the
backend is python), which ``EngineService`` checks as that backend would (``serving/backend_rules.py``).

Everything else (the in-flight batching loop, sending, cancellation, ``stop`` requests, drain) is
``ziya_trt.serving.triton.engine_service``, which is tested without a server; the backend's own metric families
are ``ziya_trt.serving.triton.backend_metrics``.
"""

from pathlib import Path

import triton_python_backend_utils as pb_utils

from ziya_trt.serving.triton import backend_metrics, gauges
from ziya_trt.serving.config import ServeConfig
from ziya_trt.serving.triton.engine_service import EngineService
from ziya_trt.serving.request_metrics import ENGINE_QUEUE_TIME, TritonRequestMetrics
from ziya_trt.serving.triton.responder import TritonResponder
from ziya_trt.wire.arrays import read_inputs
from ziya_trt.wire.tensors import ENGINE_INPUTS


class TritonPythonModel:
    def initialize(self, args):
        name, repo = args["model_name"], Path(args["model_repository"]).parent
        self.requests = TritonRequestMetrics(pb_utils, {"model": name}, defs=(ENGINE_QUEUE_TIME,))
        self.service = EngineService.from_config(ServeConfig.for_model(args), name, repo, self.requests.observe,
                                                 model_config=args["model_config"])
        self.metrics = gauges.mirror(pb_utils, gauges.ENGINE_GAUGES | gauges.KV_GAUGES, self.service.stats, {"model": name})
        # the C++ backend's families, updated from the same thread as the gauges above
        self.backend_metrics = backend_metrics.mirror(pb_utils, self.service, args, on=self.metrics)

    def execute(self, requests):
        for r in requests:
            self.service.start(TritonResponder(pb_utils, r.get_response_sender()),
                               lambda r=r: read_inputs(pb_utils.get_input_tensor_by_name, r, ENGINE_INPUTS),
                               r.request_id(), set(r.requested_output_names()) or None)
        return None

    def finalize(self):
        self.service.finalize()
        self.metrics.close()
        self.backend_metrics.close()
        self.requests.close()
