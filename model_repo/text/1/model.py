"""Triton adapter for the text front door: reads tensors, hands them to ``FrontDoorService``.

Everything else (admission, tokenizing, the engine call over gRPC, streaming text, cancellation,
drain) is ``ziya_trt.serving.triton.frontdoor_service``, which is tested without a server.
"""

from pathlib import Path

import triton_python_backend_utils as pb_utils

from ziya_trt.serving.triton import gauges
from ziya_trt.serving.config import ServeConfig
from ziya_trt.serving.triton.frontdoor_service import FrontDoorService
from ziya_trt.serving.request_metrics import TritonRequestMetrics
from ziya_trt.serving.triton.responder import TritonResponder
from ziya_trt.wire.arrays import read_inputs
from ziya_trt.wire.tensors import FRONT_DOOR_INPUTS


class TritonPythonModel:
    def initialize(self, args):
        name, repo = args["model_name"], Path(args["model_repository"]).parent
        self.requests = TritonRequestMetrics(pb_utils, {"model": name})
        self.service = FrontDoorService.from_config(ServeConfig.for_model(args), name, repo, self.requests.record)
        self.metrics = gauges.mirror(pb_utils, gauges.FRONT_DOOR_GAUGES, self.service.stats, {"model": name})

    def execute(self, requests):
        for r in requests:
            self.service.start(TritonResponder(pb_utils, r.get_response_sender()),
                               lambda r=r: read_inputs(pb_utils.get_input_tensor_by_name, r, FRONT_DOOR_INPUTS))
        return None

    def finalize(self):
        self.service.finalize()
        self.metrics.close()
        self.requests.close()
