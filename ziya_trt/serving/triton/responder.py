"""How the serving logic answers a request: a ``Responder`` sends outputs (``{name: array}``), a
typed error, or a bare final flag, and says whether the client cancelled.

``TritonResponder`` is the one implementation over a Python-backend response sender. It is given
the ``triton_python_backend_utils`` module by the adapter that imports it, so this package never
imports Triton and the services are tested with plain fakes.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ...errors import ZiyaError


class Responder(Protocol):
    def send(self, outputs: dict[str, np.ndarray] | None = None, error: ZiyaError | None = None,
             final: bool = False) -> None: ...

    def is_cancelled(self) -> bool: ...


class TritonResponder:
    __slots__ = ("_pb", "_sender")

    def __init__(self, pb, sender):
        self._pb, self._sender = pb, sender

    def send(self, outputs=None, error=None, final=False) -> None:
        pb = self._pb
        flags = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        if error is not None:
            self._sender.send(pb.InferenceResponse(error=pb.TritonError(error.to_wire())), flags=flags)
        elif outputs is None:
            self._sender.send(flags=flags)
        else:
            tensors = [pb.Tensor(k, v) for k, v in outputs.items()]
            self._sender.send(pb.InferenceResponse(output_tensors=tensors), flags=flags)

    def is_cancelled(self) -> bool:
        return self._sender.is_cancelled()
