"""What the sync and async clients share: prompts, request fields, response parsing, error mapping.

A request is a flat ``{tensor name: value}`` dict built once; the gRPC transport turns it into
``InferInput``s, the HTTP transport into the JSON of Triton's generate endpoints.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

import numpy as np

from .. import errors as E
from ..engine.request import EngineRequest
from ..finish import FinishReason
from ..text.detok import TextStream
from ..text.prompt import Conversation, Message, Role, encode_prompt, get_template
from ..text.sampling import SamplingParams
from ..wire.arrays import engine_fields
from ..wire.tensors import ENGINE_INPUTS, FRONT_DOOR_INPUTS

TEXT, TOKEN = "text", "token"


@dataclass
class ChatResult:
    text: str
    finish_reason: FinishReason | None
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_s: float | None
    total_s: float
    turns_dropped: int = 0
    cached_tokens: int | None = None  # prompt tokens the engine's prefix cache served (text mode)


def to_messages(messages, history=None) -> list[Message]:
    """A prompt string or message list, after optional history of (user, assistant) pairs or messages."""
    out: list[Message] = []
    for h in history or ():
        if isinstance(h, Message):
            out.append(h)
        elif isinstance(h, dict):
            out.append(Message(h["role"], h["content"]))
        else:
            u, a = h
            out += [Message(Role.USER, u), Message(Role.ASSISTANT, a)]
    if isinstance(messages, str):
        out.append(Message(Role.USER, messages))
    else:
        out += [m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in messages]
    return out


@dataclass
class Request:
    """One prepared call: which model, which fields, and the per-request decoding state."""

    model: str
    fields: dict
    specs: dict
    mode: str
    params: SamplingParams
    stream: TextStream | None = None  # token mode: the client detokenises
    prompt_tokens: int | None = None
    turns_dropped: int = 0
    cached_tokens: int | None = None
    t_start: float = field(default_factory=time.perf_counter)
    t_first: float | None = None
    completion_tokens: int | None = None
    finish_reason: FinishReason | None = None
    server_reason: str | None = None
    text_parts: list[str] = field(default_factory=list)


class Core:
    """Builds requests and parses responses; has no I/O.

    Text mode sends a conversation as ``messages``: the server applies its own template, truncation and
    safe encoding, so the client needs no tokenizer. Token mode does all of that here, with the
    tokenizer and template given, and calls the engine model directly."""

    def __init__(self, mode: str, model: str, tokenizer=None, template: str = "ziya", max_input_len: int | None = None,
                 reserve_tokens: int = 0):
        if mode not in (TEXT, TOKEN):
            raise E.InvalidRequestError(f"mode: {mode!r}; use 'text' or 'token'", "mode")
        if mode == TOKEN and tokenizer is None:
            raise E.InvalidRequestError("mode: token mode needs a tokenizer", "mode")
        self.mode, self.model, self.tok = mode, model, tokenizer
        self.template = get_template(template, tokenizer) if mode == TOKEN else None
        self.max_input_len = max_input_len
        self.reserve_tokens = reserve_tokens

    def prepare(self, messages, history=None, stream: bool = True, raw_prompt: bool = False, **sampling) -> Request:
        params = SamplingParams(**sampling) if not isinstance(sampling.get("params"), SamplingParams) else sampling["params"]
        conv = None if raw_prompt else Conversation.from_messages(to_messages(messages, history))
        if self.mode == TEXT:
            f = text_fields(messages if raw_prompt else conv, params, stream)
            return Request(self.model, f, FRONT_DOOR_INPUTS, TEXT, params)
        dropped = 0
        if raw_prompt:
            ids = self.tok.encode(messages)
        else:
            budget = self.max_input_len - self.reserve_tokens if self.max_input_len else None
            p = encode_prompt(conv, self.template, self.tok, budget)
            ids, dropped = list(p.ids), p.turns_dropped
        if self.max_input_len and len(ids) > self.max_input_len:
            raise E.PromptTooLongError(len(ids), self.max_input_len)
        f = engine_fields(EngineRequest.from_params(ids, params, end_id=self.tok.eos_id, pad_id=self.tok.pad_id))
        stops = self.template.stop_strings + params.stop
        ts = TextStream(self.tok.table, stops=stops, eos_ids=[self.tok.eos_id], max_new_tokens=params.max_new_tokens)
        return Request(self.model, f, ENGINE_INPUTS, TOKEN, params, stream=ts, prompt_tokens=len(ids),
                       turns_dropped=dropped)

    def on_response(self, req: Request, out: dict) -> str:
        """One response (``{name: value}``) in, the new text out."""
        if req.t_first is None:
            req.t_first = time.perf_counter()
        if req.mode == TEXT:
            text = "".join(_strings(out.get("text_output")))
            if out.get("num_input_tokens") is not None:
                req.prompt_tokens = _scalar(out["num_input_tokens"])
            if out.get("num_output_tokens") is not None:
                req.completion_tokens = _scalar(out["num_output_tokens"])
            if out.get("finish_reason") is not None:
                req.server_reason = "".join(_strings(out["finish_reason"]))
            if out.get("turns_dropped") is not None:
                req.turns_dropped = _scalar(out["turns_dropped"])
            if out.get("cached_tokens") is not None:
                req.cached_tokens = _scalar(out["cached_tokens"])
            req.text_parts.append(text)
            return text
        ids = out.get("output_ids")
        tokens = [] if ids is None else np.asarray(ids).reshape(-1).astype(int).tolist()
        text = req.stream.push(tokens).text if tokens else ""
        req.completion_tokens = req.stream.n_generated
        req.text_parts.append(text)
        return text

    def on_end(self, req: Request, cancelled: bool = False) -> str:
        """The response stream ended: settle held-back text and the finish reason."""
        tail = ""
        if req.mode == TOKEN:
            if req.stream.finish_reason is None:
                tail = req.stream.end(cancelled).text
            req.finish_reason = req.stream.finish_reason
        else:
            try:
                req.finish_reason = FinishReason(req.server_reason) if req.server_reason else None
            except ValueError:
                req.finish_reason = None
            if cancelled:
                req.finish_reason = FinishReason.CANCELLED
        req.text_parts.append(tail)
        return tail

    def result(self, req: Request) -> ChatResult:
        t_end = time.perf_counter()
        return ChatResult(
            text="".join(req.text_parts),
            finish_reason=req.finish_reason,
            prompt_tokens=req.prompt_tokens,
            completion_tokens=req.completion_tokens,
            ttft_s=None if req.t_first is None else req.t_first - req.t_start,
            total_s=t_end - req.t_start,
            turns_dropped=req.turns_dropped,
            cached_tokens=req.cached_tokens,
        )

    def done(self, req: Request) -> bool:
        """Token mode can finish (stop string) before the engine does; the caller then cancels."""
        return req.mode == TOKEN and req.stream.finish_reason is not None


def text_fields(prompt: str | Conversation, p: SamplingParams, stream: bool) -> dict:
    """The text front door's inputs for a raw prompt or a conversation, and its sampling settings."""
    f = {"messages": json.dumps([{"role": m.role.value, "content": m.content} for m in prompt.to_messages()],
                                ensure_ascii=False)} if isinstance(prompt, Conversation) else {"text_input": prompt}
    f |= {"max_tokens": p.max_new_tokens, "stream": stream, "top_k": p.wire_top_k,
         "top_p": p.top_p, "temperature": p.temperature, "repetition_penalty": p.repetition_penalty}
    if p.min_tokens:
        f["min_tokens"] = p.min_tokens
    if p.presence_penalty or p.frequency_penalty:
        f["presence_penalty"], f["frequency_penalty"] = p.presence_penalty, p.frequency_penalty
    if p.seed is not None:
        f["seed"] = p.seed
    if p.stop:
        f["stop_words"] = list(p.stop)
    return f


def _strings(v) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, (bytes, bytearray)):
        return [bytes(v).decode("utf-8")]
    return [x.decode("utf-8") if isinstance(x, (bytes, bytearray)) else str(x) for x in np.asarray(v).reshape(-1)]


def _scalar(v) -> int:
    return int(np.asarray(v).reshape(-1)[0])


# --- errors ---------------------------------------------------------------------------------------

_TRACE = re.compile(r"Traceback \(most recent call last\).*", re.S)
# the gRPC status codes of a call the transport itself ended: nothing the server decided about the request
_TRANSPORT_STATUS = {"StatusCode.UNAVAILABLE": E.APIConnectionError, "StatusCode.CANCELLED": E.APIConnectionError,
                     "StatusCode.DEADLINE_EXCEEDED": E.APITimeoutError}


def map_error(exc: BaseException | str, status: int | str | None = None,
              retry_after_s: float | None = None) -> E.ZiyaError:
    """A tritonclient/transport failure, or an error message with its HTTP status, as the package's typed error: by
    the server's ``[ziya:]`` code, else the transport's status (HTTP, or the gRPC ``StatusCode``), else the failed
    transport's exception class, else (a message with no status: in-band on a stream) one of Triton's own message
    forms (``errors.TRITON_MESSAGES``); anything else is a ``ServerError`` with the message. ``retry_after_s``: the
    wait the server asked for (HTTP ``Retry-After``)."""
    msg = _TRACE.sub("", exc if isinstance(exc, str) else _message(exc)).strip()
    if status is None and not isinstance(exc, str):
        status = _status(exc)
    err = (E.from_wire(msg) or E.from_status(status, msg) or _transport_failure(exc, status, msg)
           or (E.from_triton(msg) if status is None else None)
           or E.ServerError(msg or type(exc).__name__))
    if retry_after_s is not None:
        err.retry_after_s = retry_after_s
    return err


def _message(exc: BaseException) -> str:
    """tritonclient's message, gRPC's details, or the exception's own text; its type's name if it has none."""
    for attr in ("message", "details"):  # InferenceServerException.message(), grpc.RpcError.details()
        get = getattr(exc, attr, None)
        if callable(get) and isinstance(text := get(), str) and text:
            return text
    return str(exc) or type(exc).__name__


def _status(exc: BaseException) -> str | None:
    """The gRPC status of a tritonclient exception (``status()``) or a gRPC error (``code()``), else None."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        return exc.status()
    import grpc

    code = getattr(exc, "code", None) if isinstance(exc, grpc.RpcError) else None
    return str(code()) if callable(code) else None


def _transport_failure(exc, status, msg: str) -> E.APIConnectionError | None:
    """A call the transport ended: by its gRPC status, else by the exception's class (the socket's, http.client's,
    aiohttp's; a timeout is any ``TimeoutError``, which socket and aiohttp timeouts are)."""
    cls = _TRANSPORT_STATUS.get(str(status)) if status is not None else None
    if cls is None and isinstance(exc, TimeoutError):
        cls = E.APITimeoutError
    elif cls is None and isinstance(exc, _transport_errors()):
        cls = E.APIConnectionError
    if cls is None:
        return None
    return cls(f"request timed out: {msg}" if cls is E.APITimeoutError else f"cannot reach the server: {msg}")


def _transport_errors() -> tuple[type, ...]:
    import http.client

    import aiohttp

    return OSError, http.client.HTTPException, aiohttp.ClientError


def as_array(name: str, value, specs: dict) -> np.ndarray:
    return specs[name].array(value)
