"""Triton gRPC messages without tritonclient's client objects: a raw ``ModelInferRequest`` built
from arrays, a response's outputs read back as arrays, and the address and final-response checks
that the client and the front door's engine link share."""

from __future__ import annotations

import numpy as np

from .tensors import NP_BY_WIRE


def is_host_port(url: str) -> bool:
    host, _, port = url.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def infer_request(model: str, request_id: str, arrays: dict[str, np.ndarray], outputs=()):
    """A gRPC ``ModelInferRequest`` with raw tensor contents and empty final responses enabled."""
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor

    r = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    r.parameters["triton_enable_empty_final_response"].bool_param = True
    for name, a in arrays.items():
        t = r.inputs.add()
        t.name, t.datatype = name, np_to_triton_dtype(a.dtype)
        t.shape.extend(a.shape)
        r.raw_input_contents.append(_bytes_content(serialize_byte_tensor(a)) if a.dtype == np.object_ else a.tobytes())
    for name in outputs:
        r.outputs.add().name = name
    return r


def _bytes_content(s: np.ndarray) -> bytes:
    """tritonclient's serialised BYTES tensor as raw contents: a 0-d object array holding the bytes (its ``tobytes``
    would be the object's pointer), or, in older releases, a byte array."""
    return s.item() if s.dtype == np.object_ else s.tobytes()


def response_arrays(ir) -> dict[str, np.ndarray]:
    """The outputs of a ``ModelInferResponse`` (raw contents) as arrays; numeric ones are read-only views."""
    out = {}
    for o, raw in zip(ir.outputs, ir.raw_output_contents):
        dtype = NP_BY_WIRE.get(o.datatype)
        if dtype is np.object_:
            from tritonclient.utils import deserialize_bytes_tensor

            a = deserialize_bytes_tensor(raw)
        else:
            if dtype is None:
                from tritonclient.utils import triton_to_np_dtype

                dtype = triton_to_np_dtype(o.datatype)
            a = np.frombuffer(raw, dtype=dtype)
        out[o.name] = a.reshape(tuple(o.shape))
    return out


def is_final(ir) -> bool:
    """Whether a gRPC ``ModelInferResponse`` is its request's last (no flag: a single response)."""
    p = ir.parameters.get("triton_final_response")
    return True if p is None else p.bool_param
