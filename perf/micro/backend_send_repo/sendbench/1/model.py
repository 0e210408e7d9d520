"""What one Python-backend response costs the stub: ``N`` one-token responses to one request, sent back to back
or ``GAP_MS`` apart, from the model's own thread or another; the stub's CPU and wall time per send come back in
the final response (``stats``: CPU µs, wall µs, voluntary context switches, each per send)."""

import resource
import threading
import time

import numpy as np
import triton_python_backend_utils as pb


def _run(sender, n: int, gap_s: float) -> None:
    token = np.array([b"tok"], dtype=object)
    ru0, c0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time(), time.perf_counter()
    for _ in range(n):
        sender.send(pb.InferenceResponse(output_tensors=[pb.Tensor("text_output", token)]))
        if gap_s:
            time.sleep(gap_s)
    w1, c1, ru1 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
    idle = gap_s * n  # the sleeps are no part of a send's wall time
    stats = np.array([(c1 - c0) / n * 1e6, (w1 - w0 - idle) / n * 1e6, (ru1.ru_nvcsw - ru0.ru_nvcsw) / n])
    sender.send(pb.InferenceResponse(output_tensors=[pb.Tensor("stats", stats)]),
                flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)


class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            n = int(pb.get_input_tensor_by_name(r, "N").as_numpy()[0])
            mode = int(pb.get_input_tensor_by_name(r, "MODE").as_numpy()[0])  # 1: from another thread
            gap_ms = float(pb.get_input_tensor_by_name(r, "GAP_MS").as_numpy()[0])
            args = (r.get_response_sender(), n, gap_ms / 1000.0)
            if mode == 1:
                threading.Thread(target=_run, args=args, daemon=True).start()
            else:
                _run(*args)
        return None
