"""The project's typed errors, and the stable in-band codes that carry them across Triton.

Triton's python backend drops the error codes a model sets, so the server puts a stable prefix
``[ziya:<code>]`` at the start of every error message it produces. Clients map the prefix back to
the same exception class; nothing else about the message is parsed. tritonserver's own refusals carry
no code, and over a gRPC stream no status either: those are read by their fixed forms, one table of
them (``TRITON_MESSAGES``).

The tree mirrors openai-python's: ``ZiyaError`` at the root; ``APIConnectionError`` (with
``APITimeoutError`` under it) for a server that cannot be reached or does not answer, named so that
they do not shadow Python's built-in ``ConnectionError`` and ``TimeoutError``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from enum import Enum


class ErrorCode(str, Enum):
    INVALID_REQUEST = "invalid_request"
    PROMPT_TOO_LONG = "prompt_too_long"
    OVERLOADED = "overloaded"
    ENGINE = "engine"
    SHUTTING_DOWN = "shutting_down"
    UNAUTHORIZED = "unauthorized"
    INTERNAL = "internal"


class ZiyaError(Exception):
    """Base of every error this package raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL
    retry_after_s: float | None = None  # the wait a server asked for before another try (HTTP Retry-After), if it did

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_wire(self) -> str:
        """The message as the server sends it: stable code prefix, then the human text."""
        return f"[ziya:{self.code.value}] {self.message}"


class InvalidRequestError(ZiyaError):
    """A request parameter is out of range, malformed or missing. Names the field and the limit."""

    code = ErrorCode.INVALID_REQUEST

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class PromptTooLongError(InvalidRequestError):
    """The prompt (after history truncation) does not fit the engine's input budget."""

    code = ErrorCode.PROMPT_TOO_LONG

    def __init__(self, n_tokens: int, budget: int, what: str = "prompt", field: str = "text_input"):
        self.n_tokens = n_tokens
        self.budget = budget
        self.excess = n_tokens - budget
        self.what = what
        super().__init__(f"{field}: {what} is {n_tokens} tokens, {self.excess} over the limit of {budget} tokens", field)


class BodyTooLargeError(InvalidRequestError):
    """A request body over the HTTP port's limit."""

    def __init__(self, n: int, limit: int):
        super().__init__(f"request body: {n} bytes, over the limit of {limit} bytes", "body")


class AuthenticationError(ZiyaError):
    """The request did not carry the API key the server was started with (``ziya-trt serve --api-key``)."""

    code = ErrorCode.UNAUTHORIZED


class TokenizerError(ZiyaError):
    """The tokenizer directory cannot be used; lists every problem found."""

    code = ErrorCode.INTERNAL

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = list(problems)
        super().__init__(f"tokenizer at {path} is unusable: " + "; ".join(self.problems))


class ServerOverloadedError(ZiyaError):
    """The server or engine refused the request because its queue or slots are full."""

    code = ErrorCode.OVERLOADED


class ServerError(ZiyaError):
    """The server failed the request for a reason that is not the client's fault."""

    code = ErrorCode.ENGINE


class _Uncoded:
    """A message the tensorrt_llm backend itself sends (an internal error with no code); the engine stand-ins
    send theirs the same way, so clients meet here what they meet on a GPU."""

    message: str

    def to_wire(self) -> str:
        return self.message


class QueueFullError(_Uncoded, ServerOverloadedError):
    """The engine's queue is full: TensorRT-LLM's executor refuses past ``maxQueueSize`` with ``Maximum queue size
    of N has been reached, please try again later``. ``from_wire`` reads it back as overloaded."""


class BackendError(_Uncoded, ServerError):
    """The tensorrt_llm backend refused or failed a request with a message of its own."""


class ServerShuttingDownError(ServerError):
    code = ErrorCode.SHUTTING_DOWN


class APIConnectionError(ZiyaError):
    """The server cannot be reached."""


class APITimeoutError(APIConnectionError):
    """The server did not answer in time."""


# --- the one error table -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ErrorKind:
    """How one typed error goes out on every wire besides its in-band ``[ziya:<code>]`` (the class's ``code``): its
    HTTP status (every HTTP route), OpenAI's ``type`` and ``code``, the metric kind
    (``ziya_request_errors_total{kind}``) and whether a retry may succeed (``Retry-After``)."""

    http_status: int
    openai_type: str
    openai_code: str
    metric: str
    retry_after_s: int | None = None


RETRY_AFTER_S = 1  # what a refused client is told to wait (overloaded, or the server is draining or restarting)
# most specific first: an error takes the first row its class is an instance of
ERROR_TABLE: tuple[tuple[type, ErrorKind], ...] = (
    (BodyTooLargeError, ErrorKind(413, "invalid_request_error", "request_too_large", "invalid")),
    (PromptTooLongError, ErrorKind(400, "invalid_request_error", "context_length_exceeded", "invalid")),
    (InvalidRequestError, ErrorKind(400, "invalid_request_error", "invalid_value", "invalid")),
    (AuthenticationError, ErrorKind(401, "invalid_request_error", "invalid_api_key", "invalid")),
    (ServerOverloadedError, ErrorKind(429, "rate_limit_error", "overloaded", "overload", RETRY_AFTER_S)),
    (ServerShuttingDownError, ErrorKind(503, "server_error", "shutting_down", "shutting_down", RETRY_AFTER_S)),
    (ZiyaError, ErrorKind(500, "server_error", "internal_error", "server")),
)


def kind_of(err: ZiyaError) -> ErrorKind:
    return next(k for cls, k in ERROR_TABLE if isinstance(err, cls))


def retry_headers(err: ZiyaError) -> dict[str, str]:
    """``Retry-After`` for an error a retry may get past (openai-python waits that long), nothing otherwise."""
    s = kind_of(err).retry_after_s
    return {"Retry-After": str(s)} if s is not None else {}


# what a client makes of an HTTP status or a gRPC status code when the message carries no [ziya:] code
_BY_HTTP_STATUS = {400: InvalidRequestError, 401: AuthenticationError, 404: InvalidRequestError, 413: InvalidRequestError,
                   429: ServerOverloadedError, 503: ServerShuttingDownError}
_BY_GRPC_STATUS = {"INVALID_ARGUMENT": InvalidRequestError, "NOT_FOUND": InvalidRequestError,
                   "UNAUTHENTICATED": AuthenticationError,
                   "OUT_OF_RANGE": InvalidRequestError, "RESOURCE_EXHAUSTED": ServerOverloadedError}


def from_status(status, message: str) -> ZiyaError | None:
    """The typed error for a transport's status (an HTTP status, or a gRPC ``StatusCode``), None where it does not
    say more than "failed"."""
    text = str(status or "")
    name = text.rsplit(".", 1)[-1] if text.startswith("StatusCode.") else None
    cls = _BY_GRPC_STATUS.get(name) if name else _BY_HTTP_STATUS.get(int(text)) if text.isdigit() else None
    return cls(message) if cls is not None else None


def typed(e: BaseException, what: str) -> ZiyaError:
    """A typed error as it is; anything else as a generic server error that names only the exception's
    type (never a traceback or a path to a client)."""
    return e if isinstance(e, ZiyaError) else ServerError(f"{what} ({type(e).__name__})")


_BY_CODE: dict[ErrorCode, type[ZiyaError]] = {
    ErrorCode.INVALID_REQUEST: InvalidRequestError,
    ErrorCode.PROMPT_TOO_LONG: PromptTooLongError,
    ErrorCode.OVERLOADED: ServerOverloadedError,
    ErrorCode.ENGINE: ServerError,
    ErrorCode.SHUTTING_DOWN: ServerShuttingDownError,
    ErrorCode.UNAUTHORIZED: AuthenticationError,
    ErrorCode.INTERNAL: ServerError,
}
_WIRE = re.compile(r"\[ziya:([a-z_]+)\]\s*(.*)", re.S)
_TOO_LONG = re.compile(r"(\w+): (.+) is (\d+) tokens, -?\d+ over the limit of (\d+) tokens$", re.S)
_FIELD = re.compile(r"([A-Za-z_][\w.]*): ")  # messages name their field first: "temperature: ..."


# --- Triton's own messages ------------------------------------------------------------------------------------
# tritonserver's core refuses some requests itself, before a model sees them. Over a gRPC stream (ModelStreamInfer,
# what the client streams on) such a refusal arrives as the response's error message alone: no status, no [ziya:]
# code. Each row is one message form of the core (tritonserver 2.51; the source that writes it, and the status code
# it gives where a transport carries one) and the typed error it is; ``field`` names the input where the form does.
_REQ = r"^(?:\[request id: [^\]]*\] )?"  # InferenceRequest::LogRequest(), before a request's own errors
_TRITON_QUEUE_FULL = re.compile(r"Exceeds maximum queue size", re.I)
TRITON_MESSAGES: tuple[tuple[re.Pattern, type[ZiyaError]], ...] = (
    # model_repository_manager.cc FindModelIdentifier: no model of that name (gRPC unary NOT_FOUND, HTTP 404)
    (re.compile(r"^Request for unknown model: '[^']*' is not found"), InvalidRequestError),
    # model_lifecycle.cc GetModel (NOT_FOUND): the model is known but no version of it is ready, which with
    # --model-control-mode=none happens once tritonserver is stopping and has unloaded it
    (re.compile(r"^Request for unknown model: '[^']*' has no available versions"), ServerShuttingDownError),
    # infer_request.cc ValidateRequestInputs (INVALID_ARG): a required input left out
    (re.compile(_REQ + r"expected (?:\d+ inputs|number of inputs between \d+ and \d+) but got \d+ inputs for model "
                r"'[^']*'\. Got input\(s\) .*, but missing required input\(s\) ", re.S), InvalidRequestError),
    # model.cc GetInput (INVALID_ARG): an input the model does not have
    (re.compile(_REQ + r"unexpected inference input '(?P<field>[^']*)' for model '[^']*'"), InvalidRequestError),
    # infer_request.cc Normalize (INVALID_ARG): an input's data type, shape or batch size
    (re.compile(_REQ + r"inference input '(?P<field>[^']*)' data-type is '\w+', but model '[^']*' expects '\w+'"),
     InvalidRequestError),
    (re.compile(_REQ + r"unexpected shape for input '(?P<field>[^']*)' for model '[^']*'\. Expected \["),
     InvalidRequestError),
    (re.compile(_REQ + r"input '(?P<field>[^']*)' batch size does not match other inputs for '[^']*'"),
     InvalidRequestError),
    (re.compile(_REQ + r"inference request batch-size must be <= \d+ for '[^']*'"), InvalidRequestError),
    # scheduler_utils.cc PolicyQueue::Enqueue (UNAVAILABLE): past the model's dynamic_batching max_queue_size; found
    # anywhere in a message, since a front door passes its engine's refusal on after its own words
    (_TRITON_QUEUE_FULL, ServerOverloadedError),
)


def from_triton(message: str) -> ZiyaError | None:
    """The typed error of one of Triton's own message forms (``TRITON_MESSAGES``), None for any other message."""
    for pattern, cls in TRITON_MESSAGES:
        m = pattern.search(message or "")
        if m:
            field = m.groupdict().get("field")
            return cls(message, field) if field and issubclass(cls, InvalidRequestError) else cls(message)
    return None


def is_triton_queue_full(message: str) -> bool:
    """Whether a message is Triton's own refusal past a model's ``dynamic_batching`` max_queue_size."""
    return bool(_TRITON_QUEUE_FULL.search(message or ""))


def is_queue_full(message: str) -> bool:
    """Whether a message with no ``[ziya:]`` code is a full queue's refusal: Triton's own (its scheduler's queue, a
    burst faster than the model's ``execute``), or TensorRT-LLM's executor's (past ``maxQueueSize``)."""
    from .wire.trtllm_template import template

    return is_triton_queue_full(message) or template().backend.is_queue_full(message)


def from_wire(message: str) -> ZiyaError | None:
    """Turn a server message carrying ``[ziya:<code>]`` back into its typed error, with its fields, else None."""
    m = _WIRE.search(message or "")
    if not m:
        return ServerOverloadedError(message) if is_queue_full(message) else None
    try:
        code = ErrorCode(m.group(1))
    except ValueError:
        return None
    text = m.group(2).strip()
    if code is ErrorCode.PROMPT_TOO_LONG and (t := _TOO_LONG.match(text)):
        return PromptTooLongError(int(t.group(3)), int(t.group(4)), what=t.group(2), field=t.group(1))
    cls = _BY_CODE[code]
    if issubclass(cls, InvalidRequestError):
        f = _FIELD.match(text)
        return InvalidRequestError(text, f.group(1) if f else None)
    return cls(text)


_DEPRECATED = {"ConnectionError": APIConnectionError, "TimeoutError": APITimeoutError}


def __getattr__(name: str):
    """``errors.ConnectionError``/``TimeoutError``: the names of 0.1, kept for one release."""
    if name in _DEPRECATED:
        new = _DEPRECATED[name]
        warnings.warn(f"ziya_trt.errors.{name} is deprecated; use {new.__name__} (it does not shadow the built-in)",
                      DeprecationWarning, stacklevel=2)
        return new
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
