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


def map_error(exc: BaseException | str, status: int | str | None = None) -> E.ZiyaError:
    """Turn a tritonclient/transport failure into the package's typed error."""
    msg = str(getattr(exc, "message", lambda: None)() or exc) if not isinstance(exc, str) else exc
    msg = _TRACE.sub("", msg).strip()
    status = status if status is not None else (getattr(exc, "status", lambda: None)() if not isinstance(exc, str) else None)
    typed = E.from_wire(msg) or E.from_status(status, msg)  # the server's code, else the transport's status
    if typed is not None:
        return typed
    low = msg.lower()  # what is left: transport failures, and Triton's own in-band refusals, which carry no code
    if str(status) in ("503", "StatusCode.UNAVAILABLE") and "queue" in low:  # full queues' own words: from_wire
        return E.ServerOverloadedError(f"server overloaded: {msg}")
    if "deadline" in low or "timed out" in low or "timeout" in low or str(status) == "StatusCode.DEADLINE_EXCEEDED":
        return E.APITimeoutError(f"request timed out: {msg}")
    if isinstance(exc, ConnectionError) or any(s in low for s in (
            "connection refused", "failed to connect", "connect failed", "unavailable", "cannot connect",
            "stream removed", "connection reset", "socket closed", "broken pipe", "remote end closed")):
        return E.APIConnectionError(f"cannot reach the server: {msg}")
    if "unknown model" in low or "is not found" in low or "not ready" in low or "unexpected" in low or \
            "missing required input" in low or "expected" in low:
        return E.InvalidRequestError(msg)
    return E.ServerError(msg or type(exc).__name__)


def as_array(name: str, value, specs: dict) -> np.ndarray:
    return specs[name].array(value)
