"""What the HTTP guard checks before a request reaches tritonserver. Pure functions, tested without a server.

tritonserver 2.51 trusts its HTTP input in ways a public port cannot:
- its JSON parser recurses without a bound: a body nested ~110,000 deep crashes the server (SIGSEGV);
- numbers in a ``generate`` body are cast to the tensor's dtype with no range check (2**32 + 4 becomes 4);
- ``"stream": true`` on ``generate`` answers 200 with an error body after the whole generation;
- percent-encoded dots reach other routes (``/v2/models/%2e%2e/%2e%2e/v2/repository/index``);
- its shared-memory, repository, logging and trace APIs, and model configs (which hold filesystem paths),
  are open to every client unless restricted.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from ...errors import InvalidRequestError
from ...text.unicode import refuse_surrogates
from ...wire.tensors import INT_RANGES, TensorSpec

MAX_JSON_DEPTH = 64  # a real request nests at most ~6 deep

# control APIs: for the operator only (Triton's own names for its --http-restricted-api groups)
RESTRICTED_APIS = ("shared-memory", "model-config", "model-repository", "statistics", "trace", "logging")
ADMIN_HEADER = "ziya-admin-key"  # HTTP; over gRPC tritonserver expects it prefixed:
ADMIN_GRPC_HEADER = "triton-grpc-protocol-" + ADMIN_HEADER
_RESTRICTED_PATHS = re.compile(
    r"^/v2/(systemsharedmemory|cudasharedmemory|repository|logging|trace)(/|$)"
    r"|^/v2/models/[^/]+(/versions/[^/]+)?/(config|stats|trace)(/|$)"
    r"|^/v2/models/stats$"
)
_ENCODED = re.compile(r"%(2e|2f|5c|00)", re.I)  # '.', '/', '\\' and NUL have no business encoded in a path
_GENERATE = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?/(generate|generate_stream)$")
_FP32_MAX = float(np.finfo(np.float32).max)


def json_depth_over(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON body nests deeper than ``limit`` (strings are skipped; the body need not be valid)."""
    if body.count(b"[") + body.count(b"{") <= limit:  # the usual case: too few brackets to nest that deep
        return False
    if b'"' in body:
        body = _STRING.sub(b"", body)  # string contents cannot nest
    brackets = np.frombuffer(body.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if brackets.size <= limit:
        return False
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max()) > limit


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# a JSON string (or an unterminated one), written unrolled: five times faster than an alternation per character
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?')


def parse_json(body: bytes, what: str = "request body"):
    """A body as strict JSON, or an ``InvalidRequestError`` saying why: UTF-8 (no invalid byte), one JSON value
    with nothing after it, and every string Unicode text (no lone surrogate). ``NaN`` and ``Infinity`` are read
    as numbers, so that the check of the field they are in refuses them by name. Call ``json_depth_over``
    first: the parser recurses."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequestError(f"{what}: not UTF-8 (invalid byte at offset {e.start})", "body") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidRequestError(f"{what}: not valid JSON ({e.msg} at character {e.pos})", "body") from None
    except (ValueError, RecursionError) as e:
        raise InvalidRequestError(f"{what}: not valid JSON ({e})", "body") from None
    refuse_surrogates(value, "")
    return value


def check_path(raw_path: str) -> None:
    """Refuse a path that is encoded to reach somewhere it does not say (``%2e%2e``, ``%2f``, ``..``)."""
    path = raw_path.split("?", 1)[0]
    if _ENCODED.search(path) or any(seg in (".", "..") for seg in path.split("/")) or "//" in path:
        raise InvalidRequestError(f"path: {path[:200]!r} is not a plain path", "path")


def is_restricted(path: str) -> bool:
    """Whether ``path`` is one of tritonserver's control or memory APIs, or shows a model's configuration."""
    return bool(_RESTRICTED_PATHS.match(path))


def generate_model(path: str) -> tuple[str, bool] | None:
    """(model, streaming) for a ``generate``/``generate_stream`` path, else None."""
    m = _GENERATE.match(path)
    return (m.group(1), m.group(2) == "generate_stream") if m else None


def check_generate_body(body, specs: dict[str, TensorSpec], streaming: bool) -> None:
    """The checks tritonserver's ``generate`` JSON parser does not make: every number fits its tensor's
    dtype (no silent wrap-around), and ``stream`` goes to ``generate_stream``."""
    if not isinstance(body, dict):
        raise InvalidRequestError("request body: expected a JSON object", "body")
    for name in ("stream", "streaming"):
        if body.get(name) is True and not streaming:
            raise InvalidRequestError(f"{name}: true on /generate; use /generate_stream for streaming", name)
    for name, value in body.items():
        spec = specs.get(name)
        if spec is not None:
            for v in _leaves(value):
                _check_value(spec, v)


def _leaves(value):  # a tensor's values, however nested
    if isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _check_value(spec: TensorSpec, v) -> None:
    """One value against its tensor's dtype; tritonserver's own message for a wrong type names no field."""
    kind = spec.data_type
    rng = INT_RANGES.get(kind)
    if rng is not None:
        if isinstance(v, bool) or not isinstance(v, int):
            raise InvalidRequestError(f"{spec.name}: expected an integer ({spec.client_dtype}), got {v!r}", spec.name)
        if not rng[0] <= v <= rng[1]:
            raise InvalidRequestError(f"{spec.name}: {v} does not fit {spec.client_dtype} ({rng[0]} to {rng[1]})",
                                      spec.name)
    elif kind == "TYPE_FP32":
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InvalidRequestError(f"{spec.name}: expected a number, got {v!r}", spec.name)
        if math.isnan(v) or abs(v) > _FP32_MAX:
            raise InvalidRequestError(f"{spec.name}: must be a finite number, got {v}", spec.name)
    elif kind == "TYPE_BOOL" and not isinstance(v, bool):
        raise InvalidRequestError(f"{spec.name}: expected true or false, got {v!r}", spec.name)
    elif kind == "TYPE_STRING" and not isinstance(v, str):
        raise InvalidRequestError(f"{spec.name}: expected text, got {v!r}", spec.name)
