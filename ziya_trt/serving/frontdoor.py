"""The text front door's per-request logic: validate a text request, tokenize it into an engine
request, and turn the engine's token stream into final-correct text (``TextJob``). Pure: no Triton,
no I/O; ``frontdoor_service`` runs the requests and the Triton adapter (``model_repo/text``) only
moves tensors."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, replace

import numpy as np

from ..engine.request import EngineRequest
from ..errors import InvalidRequestError, PromptTooLongError
from ..finish import FinishReason
from ..text.detok import TextStream
from ..text.guide import Guide, check as check_guide
from ..text.prompt import Conversation, encode_prompt, get_template, parse_messages
from ..text.sampling import SamplingParams, check_words
from ..text.tokenizer import ZiyaTokenizer, load_tokenizer
from ..wire.arrays import guide_from_inputs, scalar
from ..wire.tensors import FRONT_DOOR_INPUTS as S

BYTES_PER_TOKEN_LIMIT = 16  # a prompt over max_input_len * this many bytes is refused before tokenizing
_WIRE_NAMES = {"max_new_tokens": "max_tokens", "stop": "stop_words"}


@dataclass(frozen=True)
class TextRequest:
    text: str | None  # a raw prompt (trusted), or
    messages: Conversation | None  # a conversation the server formats
    params: SamplingParams
    stream: bool = False
    exclude_input: bool = True
    bad_words: tuple[str, ...] = ()
    end_id: int | None = None
    pad_id: int | None = None
    trusted: bool = True  # a raw prompt's added tokens (``<human>``) count as markers; False: all of it is content
    fit_max_tokens: bool = False  # max_new_tokens is a default: as many of them as fit beside the prompt
    # vLLM's extensions (the OpenAI API): generate past the end token; token ids that end the text as the end token
    # does; keep the stop string that ended the text; keep at most this many prompt tokens (the oldest turns or
    # tokens go first)
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str: bool = False
    truncate_prompt_tokens: int | None = None
    logprobs: bool = False  # each output token's log probability, from the engine (the OpenAI API's logprobs)
    # the model's own token ids as the prompt (the OpenAI API's token prompts): no template, trusted as given
    token_ids: tuple[int, ...] | None = None
    n: int = 1  # sequences for the prompt, in one engine request (num_return_sequences); each a TextJob of its own
    guide: Guide | None = None  # structured output: what the text must match (guided decoding)


def _text(v, field: str, max_bytes: int) -> str:
    if isinstance(v, str):
        v = v.encode("utf-8", "surrogatepass")
    if len(v) > max_bytes:
        raise InvalidRequestError(f"{field}: {len(v)} bytes, over the limit of {max_bytes} bytes", field)
    try:
        s = v.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequestError(f"{field}: not valid UTF-8 (bad byte at offset {e.start})", field) from None
    if "\x00" in s:
        raise InvalidRequestError(f"{field}: contains a NUL character at offset {s.index(chr(0))}", field)
    return s


def _words(inputs: dict, name: str, max_bytes: int) -> tuple[str, ...]:
    a = inputs.get(name)
    if a is None:
        return ()
    return tuple(_text(v, name, max_bytes) for v in np.asarray(a).reshape(-1))


def _prompt(inputs: dict, max_bytes: int) -> tuple[str | None, Conversation | None]:
    raw, msgs = scalar(inputs, S["text_input"]), scalar(inputs, S["messages"])
    if (raw is None) == (msgs is None):
        raise InvalidRequestError("text_input, messages: give one of them (a raw prompt, or a conversation)",
                                  "messages" if msgs is not None else "text_input")
    if msgs is not None:
        return None, Conversation.from_messages(parse_messages(_text(msgs, "messages", max_bytes)))
    text = _text(raw, "text_input", max_bytes)
    if not text.strip():
        raise InvalidRequestError("text_input: empty prompt", "text_input")
    return text, None


def parse_text_request(inputs: dict, max_prompt_bytes: int) -> TextRequest:
    """Validate every field of a front-door request; errors name the field and the limit."""
    text, messages = _prompt(inputs, max_prompt_bytes)
    defaults = SamplingParams()
    kw = dict(
        max_new_tokens=scalar(inputs, S["max_tokens"]),
        temperature=float(scalar(inputs, S["temperature"], defaults.temperature)),
        top_p=float(scalar(inputs, S["top_p"], defaults.top_p)),
        top_k=scalar(inputs, S["top_k"], defaults.top_k),
        repetition_penalty=float(scalar(inputs, S["repetition_penalty"], defaults.repetition_penalty)),
        presence_penalty=float(scalar(inputs, S["presence_penalty"], 0.0)),
        frequency_penalty=float(scalar(inputs, S["frequency_penalty"], 0.0)),
        min_tokens=scalar(inputs, S["min_tokens"], 0),
        seed=scalar(inputs, S["seed"]),
        stop=_words(inputs, "stop_words", 4096),
    )
    bad = _words(inputs, "bad_words", 4096)
    check_words("bad_words", bad, "bad words")
    n = scalar(inputs, S["num_return_sequences"], 1)
    if n < 1:  # the engine refuses more than its slots, by name
        raise InvalidRequestError(f"num_return_sequences: {n} must be at least 1", "num_return_sequences")
    try:
        params = SamplingParams(**kw)
    except InvalidRequestError as e:  # name the field as the client sent it
        wire = _WIRE_NAMES.get(e.field, e.field)
        raise InvalidRequestError(e.message.replace(f"{e.field}:", f"{wire}:", 1), wire) from None
    return TextRequest(
        text=text,
        messages=messages,
        params=params,
        stream=bool(scalar(inputs, S["stream"], False)),
        exclude_input=bool(scalar(inputs, S["exclude_input_in_output"], True)),
        bad_words=bad,
        end_id=scalar(inputs, S["end_id"]),
        pad_id=scalar(inputs, S["pad_id"]),
        n=n,
        guide=_guide(inputs),
    )


def _guide(inputs: dict) -> Guide | None:
    g = guide_from_inputs(inputs, S)
    return None if g is None else check_guide(g, "guided_decoding_guide" if g.type != "json" else
                                              "guided_decoding_guide_type")


@dataclass(frozen=True)
class FrontDoorLimits:
    max_input_len: int
    max_seq_len: int

    @property
    def max_prompt_bytes(self) -> int:
        return self.max_input_len * BYTES_PER_TOKEN_LIMIT


class FrontDoor:
    """What every request of a front door shares: the tokenizer, the limits, the template."""

    def __init__(self, tokenizer: ZiyaTokenizer, limits: FrontDoorLimits, template: str = "ziya",
                 kv_block_tokens: int = 32):
        self.tok = tokenizer
        self.limits = limits
        self.template = get_template(template, tokenizer)
        self.kv_block_tokens = kv_block_tokens  # the engine's KV block size, to count reused prompt tokens

    @classmethod
    def from_config(cls, cfg) -> "FrontDoor":
        """From a ``ServeConfig``."""
        tok = load_tokenizer(cfg.tokenizer_dir, require_chat_tokens=cfg.template == "ziya")
        return cls(tok, FrontDoorLimits(cfg.max_input_len, cfg.max_seq_len), cfg.template, cfg.kv_block_tokens)

    def open(self, inputs: dict) -> "TextJob":
        return TextJob(self, parse_text_request(inputs, self.limits.max_prompt_bytes))

    def word_ids(self, words) -> list[list[int]]:
        """Token ids of stop/bad words as they appear mid-text (without sentencepiece's dummy prefix)."""
        out = []
        space = self.tok.table.texts
        for w in words:
            ids = self.tok.encode(w, add_bos=False)
            if len(ids) > 1 and space[ids[0]] == " " and not w.startswith(" "):
                ids = ids[1:]
            out.append(ids)
        return out


class TextJob:
    """One request: its prepared engine request, and the engine's token batches turned into text.

    ``push`` returns the text to stream now ("" for nothing) and whether the engine should be told to
    stop, which it says once, when a stop string completes the text. After that, or after ``cancel``,
    text is held for the final response (the engine may still send tokens; they are counted, not shown).
    """

    def __init__(self, door: FrontDoor, req: TextRequest):
        self.req = req
        tok, lim, p = door.tok, door.limits, req.params
        self.turns_dropped = 0
        if req.messages is not None:  # the template's markers, the messages' content never one
            budget = lim.max_input_len if req.fit_max_tokens else min(lim.max_input_len,
                                                                       lim.max_seq_len - p.max_new_tokens)
            if req.truncate_prompt_tokens is not None:
                budget = min(budget, req.truncate_prompt_tokens)
            if budget < 1:
                raise InvalidRequestError(f"max_tokens: {p.max_new_tokens} leaves no room for a prompt in "
                                          f"max_seq_len {lim.max_seq_len}", "max_tokens")
            prompt = encode_prompt(req.messages, door.template, tok, budget)
            self.input_ids, self.turns_dropped, prompt_text = list(prompt.ids), prompt.turns_dropped, prompt.text
        elif req.token_ids is not None:  # the model's own ids, an added token's included: what the caller asked for
            bad = [t for t in req.token_ids if isinstance(t, bool) or not 0 <= t < tok.vocab_size]
            if bad or not req.token_ids:
                raise InvalidRequestError(f"prompt: token id {bad[0]} is outside the vocabulary of {tok.vocab_size}"
                                          if bad else "prompt: empty prompt", "prompt")
            self.input_ids, prompt_text = list(req.token_ids), tok.decode(req.token_ids)
        elif req.trusted:
            self.input_ids, prompt_text = tok.encode(req.text), req.text
        else:
            self.input_ids, prompt_text = tok.encode_protected(req.text, [(0, len(req.text))]), req.text
        if req.messages is None and req.truncate_prompt_tokens is not None:
            self.input_ids = self.input_ids[-req.truncate_prompt_tokens:]  # the oldest tokens go first
        n = len(self.input_ids)
        if n > lim.max_input_len:
            raise PromptTooLongError(n, lim.max_input_len)
        if req.fit_max_tokens:
            p = replace(p, max_new_tokens=min(p.max_new_tokens, lim.max_seq_len - n))
        if n + p.max_new_tokens > lim.max_seq_len:
            raise InvalidRequestError(
                f"max_tokens: {p.max_new_tokens} with a {n}-token prompt exceeds max_seq_len {lim.max_seq_len}; "
                f"at most {lim.max_seq_len - n} fit",
                "max_tokens",
            )
        for name, v in (("end_id", req.end_id), ("pad_id", req.pad_id), *(("stop_token_ids", t) for t in req.stop_token_ids)):
            if v is not None and not 0 <= v < tok.vocab_size:
                raise InvalidRequestError(f"{name}: {v} is outside the vocabulary of {tok.vocab_size}", name)
        end_id = req.end_id if req.end_id is not None else tok.eos_id
        stops = tuple(door.template.stop_strings) + p.stop
        self.id = uuid.uuid4().hex
        # the front door always streams from the engine, to stop on text. ignore_eos: an end id of -1, which
        # TensorRT-LLM reads as none (trtllm-serve sends the same); stop token ids are one-token stop words
        self.engine_request = EngineRequest.from_params(
            self.input_ids, p, end_id=-1 if req.ignore_eos else end_id,
            pad_id=req.pad_id if req.pad_id is not None else tok.pad_id, request_id=self.id,
            stop_words=door.word_ids(stops) + [[t] for t in req.stop_token_ids],
            bad_words=door.word_ids(req.bad_words), return_perf_metrics=True,  # for the count of reused KV blocks
            return_log_probs=req.logprobs, num_return_sequences=req.n, guide=req.guide)
        self.kv_block_tokens = door.kv_block_tokens
        self._table, self._stops, self._max_new = tok.table, stops, p.max_new_tokens
        self._ends = ([] if req.ignore_eos else [end_id]) + list(req.stop_token_ids)
        self.prompt_text = prompt_text
        self._start_text()

    def sibling(self) -> "TextJob":
        """Another sequence of the same request (num_return_sequences > 1): the same prompt and engine request, and
        text of its own (its own detokeniser, stop strings, log probabilities)."""
        twin = copy.copy(self)
        twin._start_text()
        return twin

    def _start_text(self) -> None:
        req = self.req
        self.reused_blocks = 0
        self.stream = TextStream(self._table, stops=self._stops, eos_ids=self._ends, max_new_tokens=self._max_new)
        self.pending: list[str] = [] if req.exclude_input else [self.prompt_text]
        self.engine_tokens = 0
        self.stopping = False  # a stop was asked for (stop string or cancellation)
        self.cancelled = False
        # a request that asked: (token id, log probability) of each token the text stream took (not the end token, nor
        # any after a stop string), held back and released with the text, as the text is
        self.pending_lp: list[tuple[int, float]] | None = [] if req.logprobs else None
        self.released_lp: list[tuple[int, float]] = []

    @property
    def n_output(self) -> int:
        return self.stream.n_generated

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens whose KV the engine took from its prefix cache instead of computing them."""
        return min(self.reused_blocks * self.kv_block_tokens, len(self.input_ids))

    @property
    def stopped_early(self) -> bool:
        """True once the text is complete although the engine may still be generating (stop string)."""
        return self.stream.finish_reason is not None

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.stream.finish_reason

    def push(self, tokens: list[int], log_probs: list[float] | None = None) -> tuple[str, bool]:
        """``log_probs``: one per token, for a request that asked for them."""
        self.engine_tokens += len(tokens)
        if tokens and not self.stopped_early:
            if self.pending_lp is None:
                self.pending.append(self.stream.push(tokens).text)
            else:
                self._push_each(tokens, log_probs)
            if self.req.include_stop_str and self.stream.stop_string is not None:
                self.pending.append(self.stream.stop_string)
        stop = self.stopped_early and not self.stopping
        self.stopping = self.stopping or stop
        if self.req.stream and not self.stopping and any(self.pending):
            text, self.pending = "".join(self.pending), []
            self._release_lp()
            return text, stop
        return "", stop

    def _push_each(self, tokens: list[int], log_probs: list[float]) -> None:
        """One token at a time (a request that asked for log probabilities only), to know which ones the text stream
        took: not the end token, nor any after the one that completed a stop string or reached max_tokens."""
        stream = self.stream
        for t, lp in zip(tokens, log_probs):
            if stream.finish_reason is not None:
                return
            self.pending.append(stream.push((t,)).text)
            if stream.finish_reason is not FinishReason.EOS:
                self.pending_lp.append((t, lp))

    def _release_lp(self) -> None:
        if self.pending_lp:
            self.released_lp += self.pending_lp
            self.pending_lp = []

    def take_logprobs(self) -> list[tuple[int, float]]:
        """(token id, log probability) of the tokens behind the text released since the last call."""
        out, self.released_lp = self.released_lp, []
        return out

    def cancel(self) -> bool:
        """The client cancelled: True the first time a stop should go to the engine."""
        self.cancelled = True
        first, self.stopping = not self.stopping, True
        return first

    def finish(self) -> str:
        """The final response's text, once the engine has finished (its last tokens pushed)."""
        if not self.stopped_early:
            self.pending.append(self.stream.end(cancelled=self.cancelled).text)
            if self.req.include_stop_str and self.stream.stop_string is not None:
                self.pending.append(self.stream.stop_string)
        text, self.pending = "".join(self.pending), []
        self._release_lp()
        return text
