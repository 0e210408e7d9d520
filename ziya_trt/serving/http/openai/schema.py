"""The OpenAI-compatible API's request schema (pydantic), its error shape, and its OpenAPI document.

Requests are validated once, here: unknown fields are refused as OpenAI refuses them, parameters this
server cannot honour (``top_logprobs`` > 0, tools) are refused by name, and what a
request leaves out takes the model card's defaults (``SamplingParams``). ``n`` choices are one engine request of
``num_return_sequences`` n (each choice an engine slot, so at most the engine's max_batch_size: the server checks
that). A completion's ``prompt`` is a string, a list of strings, a list of token ids or a list of lists of token ids
(as OpenAI's and vLLM's); a list runs as one engine request per prompt, its choices indexed prompt-major
(prompt i's choice j is ``i * n + j``). Token ids are the model's own, sent as given with no template: an added
token's id is that token (a raw-token API: the caller asked for it). A chat whose last message is the assistant's is
a prefill: the answer is continued, and only the new text returned (vLLM's ``continue_final_message``, also accepted
with ``add_generation_prompt: false``). Log probabilities are the sampled token's
only (chat ``logprobs: true`` with ``top_logprobs`` 0 or absent; completions ``logprobs: 0``): TensorRT-LLM 1.2.1's
``tensorrt_llm`` backend returns no alternatives (contracts/log-probs.json). OpenAI's bookkeeping fields (``store``,
``metadata``, ``service_tier``, ``user``, ``parallel_tool_calls`` without tools, ``response_format`` text) are
accepted and change nothing. vLLM's extensions are honoured where TensorRT-LLM's backend has the tensor for them:
``top_k`` (-1: off), ``seed`` (-1: random), ``repetition_penalty``, ``min_tokens``, ``ignore_eos``, ``stop_token_ids``,
``bad_words``, ``include_stop_str_in_output``, ``truncate_prompt_tokens``, ``stream_options.continuous_usage_stats``;
``skip_special_tokens`` and ``min_p`` only at their defaults (true; 0).

Structured outputs become one guide of TensorRT-LLM's guided decoding (``text.guide``): OpenAI's ``response_format``
(chat) ``json_object`` (a JSON schema of any object) and ``json_schema`` (its ``schema``; ``strict`` is accepted and the
grammar is enforced either way, as xgrammar's strict mode, which TensorRT-LLM compiles with); vLLM's ``guided_json``,
``guided_regex``, ``guided_choice`` (an EBNF grammar of the choices), ``guided_grammar`` (xgrammar's EBNF, not Lark),
and their newer form ``structured_outputs`` (``json``, ``regex``, ``choice``, ``grammar``, ``json_object``; no
``structural_tag``: the backend maps no such guide type). One of them per request; a schema, regex or grammar that
does not parse is a 400 naming the parameter.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ....errors import InvalidRequestError, ZiyaError, kind_of
from ....text import guide as guides
from ....text.guide import Guide
from ....text.prompt import Message, Role
from ....text.sampling import MAX_INT32, MAX_SEED, MAX_STOP_STRINGS, SamplingParams, check_words

CARD = SamplingParams()  # the model card's defaults
NO_ALTERNATIVES = ("only 0 is supported: TensorRT-LLM 1.2.1's tensorrt_llm backend returns the log probability of the "
                   "sampled token only (output_log_probs), no alternatives")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "5" is not 5, true is not 1


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def to_message(self) -> Message:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return Message(Role.SYSTEM if self.role == "developer" else Role(self.role), text)


class StreamOptions(_Strict):
    include_usage: bool = False
    continuous_usage_stats: bool = False  # vLLM's: the usage so far in every chunk


class JsonSchemaFormat(_Strict):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | bool | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    """OpenAI's ``response_format``: ``text``, ``json_object``, or ``json_schema`` with its ``json_schema``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(_Strict):
    """vLLM's ``structured_outputs``: one of these."""

    json_: str | dict[str, Any] | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = Field(None, min_length=1)
    grammar: str | None = None
    json_object: bool | None = None
    structural_tag: str | None = None


def _schema_text(schema) -> str:
    return schema if isinstance(schema, str) else json.dumps(schema, ensure_ascii=False)


ANY_OBJECT = '{"type": "object"}'  # json_object: any JSON object, as OpenAI's JSON mode promises
# vLLM's structured outputs (``guided_<name>``, ``structured_outputs.<name>``) as the backend's guide types: a choice
# becomes an EBNF grammar of its strings (the backend has no choice type)
_VLLM_GUIDES = {
    "json": lambda v: Guide("json_schema", _schema_text(v)),
    "regex": lambda v: Guide("regex", v),
    "choice": lambda v: Guide("ebnf_grammar", guides.choice_grammar(v)),
    "grammar": lambda v: Guide("ebnf_grammar", v),
    "json_object": lambda v: Guide("json_schema", ANY_OBJECT),
}


class _Generation(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1, le=MAX_INT32)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=-1, le=MAX_SEED)  # -1: vLLM's "random"
    stop: str | list[str] | None = None
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    n: int | None = Field(None, ge=1, le=MAX_INT32)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # OpenAI's bookkeeping: accepted, no effect on the output
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    # vLLM's extensions
    top_k: int | None = Field(None, ge=-1, le=MAX_INT32)  # -1: vLLM's "off"
    repetition_penalty: float | None = Field(None, gt=0.0)
    min_tokens: int | None = Field(None, ge=0, le=MAX_INT32)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = Field(None, max_length=MAX_STOP_STRINGS)
    bad_words: list[str] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    truncate_prompt_tokens: int | None = Field(None, ge=1, le=MAX_INT32)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    # vLLM's guided decoding (one per request; ``structured_outputs`` is their newer form)
    guided_json: str | dict[str, Any] | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = Field(None, min_length=1)
    guided_grammar: str | None = None
    structured_outputs: StructuredOutputs | None = None
    _guide: tuple[Guide, str] | None = PrivateAttr(None)

    def stops(self) -> tuple[str, ...]:
        return () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def choices(self) -> int:
        """``n``: the choices per prompt."""
        return self.n or 1

    def refuse_unsupported(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise InvalidRequestError("stream_options: only allowed with stream=true", "stream_options")
        if not self.skip_special_tokens:
            raise InvalidRequestError("skip_special_tokens: false is not supported; special tokens are never part of "
                                      "the text", "skip_special_tokens")
        if self.min_p:
            raise InvalidRequestError("min_p: not supported (TensorRT-LLM's backend takes no min_p); only 0, off",
                                      "min_p")
        check_words("bad_words", self.bad_words or (), "bad words")
        asked = self._guides()
        if len(asked) > 1:
            raise InvalidRequestError(f"{asked[1][1]}: one structured output per request; {asked[0][1]} is given too",
                                      asked[1][1])
        self._guide = (guides.check(*asked[0]), asked[0][1]) if asked else None

    def _guides(self) -> list[tuple[Guide, str]]:
        """Every structured output the request names, each with its parameter's name."""
        out = [(_VLLM_GUIDES[k](v), f"guided_{k}") for k, v in (("json", self.guided_json), ("regex", self.guided_regex),
               ("choice", self.guided_choice), ("grammar", self.guided_grammar)) if v is not None]
        so = self.structured_outputs
        if so is not None:
            if so.structural_tag is not None:
                raise InvalidRequestError("structured_outputs.structural_tag: not supported (TensorRT-LLM 1.2.1's "
                                          "tensorrt_llm backend maps no structural_tag guide)",
                                          "structured_outputs.structural_tag")
            named = [(k, v) for k, v in (("json", so.json_), ("regex", so.regex), ("choice", so.choice),
                                         ("grammar", so.grammar), ("json_object", so.json_object or None))
                     if v is not None]
            if not named:
                raise InvalidRequestError("structured_outputs: names no output (json, regex, choice, grammar or "
                                          "json_object)", "structured_outputs")
            out += [(_VLLM_GUIDES[k](v), f"structured_outputs.{k}") for k, v in named]
        return out

    @property
    def guide(self) -> tuple[Guide, str] | None:
        """The request's structured output, checked, and the parameter that asked for it (None: plain text)."""
        return self._guide

    def text_options(self) -> dict:
        """What the request asks of the text itself beyond sampling (``frontdoor.TextRequest``'s fields)."""
        return dict(ignore_eos=self.ignore_eos, stop_token_ids=tuple(self.stop_token_ids or ()),
                    bad_words=tuple(self.bad_words or ()), include_stop_str=self.include_stop_str_in_output,
                    truncate_prompt_tokens=self.truncate_prompt_tokens, logprobs=self.wants_logprobs(),
                    guide=self._guide[0] if self._guide else None)

    def wants_logprobs(self) -> bool:
        """Whether the response carries each output token's log probability."""
        return False

    def sampling(self, max_new_tokens: int) -> SamplingParams:
        """The request's settings; what it leaves out is the card's (max_new_tokens: the caller's default)."""
        pick = lambda v, d: d if v is None else v  # noqa: E731
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=pick(self.temperature, CARD.temperature),
            top_p=pick(self.top_p, CARD.top_p),
            top_k=0 if self.top_k == -1 else pick(self.top_k, CARD.top_k),
            repetition_penalty=pick(self.repetition_penalty, CARD.repetition_penalty),
            presence_penalty=pick(self.presence_penalty, 0.0),
            frequency_penalty=pick(self.frequency_penalty, 0.0),
            min_tokens=pick(self.min_tokens, 0),
            seed=None if self.seed == -1 else self.seed,
            stop=self.stops(),
        )

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_INT32)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)  # OpenAI's range; only 0 is served
    # accepted names this server cannot honour: refused with a clear error when set
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: ResponseFormat | None = None
    logit_bias: dict[str, float] | None = None
    modalities: list[Literal["text"]] | None = None
    # vLLM's: continue the last (assistant) message instead of answering it; the same as add_generation_prompt false
    continue_final_message: bool = False
    add_generation_prompt: bool | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        if self.top_logprobs:
            raise InvalidRequestError(f"top_logprobs: {self.top_logprobs} alternatives asked for; {NO_ALTERNATIVES}",
                                      "top_logprobs")
        for name in ("tools", "tool_choice", "functions", "function_call", "logit_bias"):
            if getattr(self, name) not in (None, [], {}):
                raise InvalidRequestError(f"{name}: not supported by this server", name)
        if (self.max_tokens is not None and self.max_completion_tokens is not None
                and self.max_tokens != self.max_completion_tokens):
            raise InvalidRequestError("max_completion_tokens: differs from max_tokens; give one", "max_completion_tokens")
        if self.continue_final_message and self.add_generation_prompt:
            raise InvalidRequestError("continue_final_message: not with add_generation_prompt true (a prefill is "
                                      "continued, not answered)", "continue_final_message")
        last = self.messages[-1].role
        if self.add_generation_prompt and last == "assistant":
            raise InvalidRequestError("add_generation_prompt: true asks for a new answer after the final assistant "
                                      "message; this server continues that message (send false, or leave it out)",
                                      "add_generation_prompt")
        if (self.continue_final_message or self.add_generation_prompt is False) and last != "assistant":
            name = "continue_final_message" if self.continue_final_message else "add_generation_prompt"
            raise InvalidRequestError(f"{name}: the last message must be the assistant's (the answer to continue)",
                                      name)

    @property
    def prefill(self) -> bool:
        """The last message is the assistant's start of an answer, to continue."""
        return self.messages[-1].role == "assistant"

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def _guides(self) -> list[tuple[Guide, str]]:
        rf = self.response_format
        if rf is None or rf.type == "text":
            if rf is not None and rf.json_schema is not None:
                raise InvalidRequestError("response_format.json_schema: only with type json_schema",
                                          "response_format.json_schema")
            return super()._guides()
        if rf.type == "json_object":
            return [(Guide("json_schema", ANY_OBJECT), "response_format"), *super()._guides()]
        if rf.json_schema is None:
            raise InvalidRequestError("response_format.json_schema: required with type json_schema",
                                      "response_format.json_schema")
        schema = rf.json_schema.schema_
        guide = Guide("json", None) if schema is None or schema is True else Guide("json_schema", _schema_text(schema))
        return [(guide, "response_format"), *super()._guides()]

    def wants_logprobs(self) -> bool:
        return bool(self.logprobs)

    def conversation_messages(self) -> list[Message]:
        return [m.to_message() for m in self.messages]


TokenId = Annotated[int, Field(ge=0, le=MAX_INT32)]
MAX_PROMPTS = 64  # prompts in one completions request (each also takes its own admission places)
PROMPT_FORMS = (f"prompt: expected a string, a list of strings, a list of token ids (integers 0 to {MAX_INT32}) or a "
                f"list of lists of token ids; no list empty, at most {MAX_PROMPTS} prompts")


class CompletionRequest(_Generation):
    # a string, a batch of strings, the model's token ids, or a batch of those (OpenAI's four forms)
    prompt: (str | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
             | Annotated[list[TokenId], Field(min_length=1)]
             | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1, max_length=MAX_PROMPTS)])
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = Field(None, ge=0, le=5)  # OpenAI's range: the alternatives per token; only 0 is served
    logit_bias: dict[str, float] | None = None

    def refuse_unsupported(self) -> None:
        super().refuse_unsupported()
        for name, ok in (("suffix", self.suffix is None), ("best_of", self.best_of in (None, 1)),
                         ("logit_bias", not self.logit_bias)):
            if not ok:
                raise InvalidRequestError(f"{name}: not supported by this server", name)
        if self.logprobs:
            raise InvalidRequestError(f"logprobs: {self.logprobs} alternatives per token asked for; {NO_ALTERNATIVES}",
                                      "logprobs")
        if self.logprobs is not None and self.echo:
            raise InvalidRequestError("logprobs: not with echo; the prompt's log probabilities are not computed",
                                      "logprobs")

    def wants_logprobs(self) -> bool:
        return self.logprobs is not None

    def prompts(self) -> list[str | list[int]]:
        """Each prompt: a text, or a list of token ids."""
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)


_UNION_TAG = re.compile(r"[\[\]()-]|^(str|int|float|bool|none|list|dict)$")  # pydantic's names for a union's member


def parse(model: type[_Generation], body: Any) -> _Generation:
    """Validate a request body; every problem becomes an ``InvalidRequestError`` naming the parameter."""
    if not isinstance(body, dict):
        raise InvalidRequestError("request body: expected a JSON object", "body")
    try:
        req = model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"] if not _UNION_TAG.search(str(p))) or "body"
        if err["type"] == "extra_forbidden":
            raise InvalidRequestError(f"Unrecognized request argument supplied: {param}", param) from None
        if param.split(".")[0] == "prompt":  # a union of four forms: pydantic's message names only the first
            raise InvalidRequestError(PROMPT_FORMS, "prompt") from None
        raise InvalidRequestError(f"{param}: {err['msg']}", param) from None
    if len(req.stops()) > MAX_STOP_STRINGS:
        raise InvalidRequestError(f"stop: {len(req.stops())} stop strings given, at most {MAX_STOP_STRINGS}", "stop")
    req.refuse_unsupported()
    return req


# --- errors in OpenAI's shape ---------------------------------------------------------------------

def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def openai_error(err: ZiyaError) -> tuple[int, dict]:
    """(HTTP status, body) for a typed error, from the one error table (``errors.ERROR_TABLE``); the message keeps the
    project's ``[ziya:<code>]`` prefix."""
    k = kind_of(err)
    param = getattr(err, "field", None)
    return k.http_status, error_body(err.to_wire(), k.openai_type, param, k.openai_code)


# --- the OpenAPI document (for clients and for schemathesis) -------------------------------------

def openapi(models: tuple[str, ...] = (), max_seq_len: int | None = None, max_choices: int | None = None) -> dict:
    """The API's OpenAPI 3.1 document; with the served ``models``, ``max_seq_len`` and ``max_choices`` (the engine's
    max_batch_size: each choice takes a slot) it names what this server takes."""
    ref = "#/components/schemas/{model}"
    schemas: dict = {}
    for m in (ChatCompletionRequest, CompletionRequest):
        s = m.model_json_schema(ref_template=ref)
        schemas |= s.pop("$defs", {})
        if models:
            s["properties"]["model"]["enum"] = list(models)
        if max_seq_len:
            for k in ("max_tokens", "max_completion_tokens"):
                if k in s["properties"]:
                    s["properties"][k]["anyOf"][0]["maximum"] = max_seq_len
        if max_choices:
            s["properties"]["n"]["anyOf"][0]["maximum"] = max_choices
        schemas[m.__name__] = s
    error = {"description": "an error in OpenAI's shape",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    schemas["Error"] = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
    errors = {str(c): error for c in (400, 404, 413, 429, 500, 503)}

    def post(name: str, summary: str) -> dict:
        return {"post": {"summary": summary, "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}},
            "responses": {"200": {"description": "a completion, or with stream=true server-sent events",
                                  "content": {"application/json": {"schema": {"type": "object"}},
                                              "text/event-stream": {"schema": {"type": "string"}}}}, **errors}}}

    ok = {"200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ziya-trt OpenAI-compatible API", "version": "1"},
        "paths": {
            "/v1/chat/completions": post("ChatCompletionRequest", "chat completion"),
            "/v1/completions": post("CompletionRequest", "text completion"),
            "/v1/models": {"get": {"summary": "the served model", "responses": ok}},
            "/health": {"get": {"summary": "ready to serve", "responses": {**ok, "503": error}}},
        },
        "components": {"schemas": schemas},
    }
