"""Conversions between Triton tensors (as numpy arrays) and the package's dataclasses.

The Triton adapters hand in ``{name: np.ndarray}`` and get ``{name: np.ndarray}`` back; nothing here
imports Triton, so all of it is tested without a server. Every array is built by its ``TensorSpec``.
"""

from __future__ import annotations

import numpy as np

from ..engine.request import EngineOutput, EngineRequest
from ..errors import InvalidRequestError
from ..text.guide import Guide
from .tensors import ENGINE_INPUTS, FRONT_DOOR_OUTPUTS, TensorSpec
from .trtllm_template import template


def read_inputs(get_tensor, request, names) -> dict[str, np.ndarray]:
    """The request's tensors that are present, as arrays; ``get_tensor`` is the adapter's
    ``pb_utils.get_input_tensor_by_name`` (this module does not import Triton)."""
    out = {}
    for name in names:
        t = get_tensor(request, name)
        if t is not None:
            out[name] = t.as_numpy()
    return out


def _array(inputs: dict, spec: TensorSpec) -> np.ndarray | None:
    """The input as an array of the declared dtype; None when an optional input is absent."""
    a = inputs.get(spec.name)
    if a is None:
        if not spec.optional:
            raise InvalidRequestError(f"{spec.name}: required input is missing", spec.name)
        return None
    a = np.asarray(a)
    if a.dtype != spec.np_dtype and not (spec.np_dtype is np.object_ and a.dtype.kind in "OSU"):
        raise InvalidRequestError(f"{spec.name}: expected {spec.client_dtype}, got {a.dtype}", spec.name)
    return a


def scalar(inputs: dict, spec: TensorSpec, default=None):
    """The value of a ``[1]``/``[1,1]`` tensor, type-checked; ``default`` when absent."""
    a = _array(inputs, spec)
    if a is None:
        return default
    if a.size != 1:
        raise InvalidRequestError(f"{spec.name}: expected one value, got shape {list(a.shape)}", spec.name)
    v = a.reshape(-1)[0]
    return v.item() if hasattr(v, "item") else v


def vector(inputs: dict, spec: TensorSpec) -> list[int] | None:
    """The ids of a ``[n]``/``[1,n]`` tensor, type-checked; None when absent."""
    a = _array(inputs, spec)
    if a is None:
        return None
    if a.ndim > 2 or (a.ndim == 2 and a.shape[0] != 1):
        raise InvalidRequestError(f"{spec.name}: expected one sequence, got shape {list(a.shape)}", spec.name)
    return a.reshape(-1).tolist()


def decode_word_list(a) -> list[list[int]]:
    """TensorRT-LLM's ``[2, n]`` (or ``[1, 2, n]``) word list: flat ids, then end offsets padded -1."""
    if a is None:
        return []
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[0]
    if a.ndim != 2 or a.shape[0] != 2:
        raise InvalidRequestError(f"word list: expected shape [2, n], got {list(a.shape)}", "stop_words_list")
    ids, offsets = a[0].tolist(), [o for o in a[1].tolist() if o >= 0]
    words, start = [], 0
    for end in offsets:
        if not start <= end <= len(ids):
            raise InvalidRequestError("word list: offsets out of order", "stop_words_list")
        words.append(ids[start:end])
        start = end
    return [w for w in words if w]


def encode_word_list(words: list[list[int]]) -> np.ndarray:
    flat = [t for w in words for t in w]
    offsets = np.cumsum([len(w) for w in words]).tolist()
    n = max(len(flat), len(offsets), 1)
    out = np.full((1, 2, n), -1, dtype=np.int32)
    out[0, 0, : len(flat)] = flat
    out[0, 0, len(flat) :] = 0
    out[0, 1, : len(offsets)] = offsets
    return out


def split_batch(inputs: dict) -> list[dict]:
    """One Triton request of batch size B as B requests of one, as the tensorrt_llm backend splits it
    (``splitBatchInputsTensors``): ``input_ids`` is ``[B, L]``; with B > 1, ``input_lengths`` must be 1-D (the
    template's ``reshape: { shape: [ ] }`` makes it ``[B]``) and each row's ids are cut to its length."""
    ids = inputs.get("input_ids")
    if ids is None or np.ndim(ids) != 2 or np.shape(ids)[0] == 1:
        return [inputs]
    lengths = inputs.get("input_lengths")
    if lengths is None or np.ndim(lengths) != 1:
        shape = list(np.shape(lengths)) if lengths is not None else None
        raise InvalidRequestError(f"input_lengths: Expected inputLengths tensors to have 1 dimension, got shape {shape} "
                                  "(a batch needs the config's reshape: { shape: [ ] } on scalar inputs)", "input_lengths")
    rows = []
    for b in range(np.shape(ids)[0]):
        row = {k: np.asarray(v)[b : b + 1] for k, v in inputs.items()}
        row["input_ids"] = row["input_ids"][:, : int(lengths[b])]
        rows.append(row)
    return rows


def engine_requests_from_inputs(inputs: dict, request_id: str = "") -> tuple[list[EngineRequest], bool]:
    """(requests, stop): one request per row of the batch, ids ``ID#row`` where there are several; ``stop`` true
    means "cancel the request with this id" (TensorRT-LLM's ``stop``) and comes with no requests."""
    rows = split_batch(inputs)
    if len(rows) == 1:
        req, stop = engine_request_from_inputs(inputs, request_id)
        return ([req] if req is not None else []), stop
    reqs = []
    for b, row in enumerate(rows):
        req, stop = engine_request_from_inputs(row, f"{request_id}#{b}" if request_id else "")
        if stop:
            raise InvalidRequestError("stop: a stop request has a batch of one", "stop")
        reqs.append(req)
    return reqs, False


def engine_request_from_inputs(inputs: dict, request_id: str = "") -> tuple[EngineRequest | None, bool]:
    """(request, stop) for a request of one: ``stop`` true means "cancel the request with this id"."""
    S = ENGINE_INPUTS
    if scalar(inputs, S["stop"], False):
        if not request_id:
            raise InvalidRequestError("stop: a stop request needs the request id of the request to stop", "stop")
        return None, True
    ids = vector(inputs, S["input_ids"])
    if ids is None:
        raise InvalidRequestError("input_ids: required input is missing", "input_ids")
    n_in = scalar(inputs, S["input_lengths"])
    if n_in != len(ids):
        raise InvalidRequestError(f"input_lengths: {n_in} does not match {len(ids)} input_ids", "input_lengths")
    seed = scalar(inputs, S["seed"])
    end_id = scalar(inputs, S["end_id"])
    req = EngineRequest(
        input_ids=[int(t) for t in ids],
        max_new_tokens=int(scalar(inputs, S["request_output_len"])),
        id=request_id,
        end_id=None if end_id is None or end_id < 0 else end_id,  # -1: no end token (TensorRT-LLM's reading)
        pad_id=scalar(inputs, S["pad_id"], 0),
        top_k=int(scalar(inputs, S["runtime_top_k"], 0)),
        top_p=float(scalar(inputs, S["runtime_top_p"], 0.0)),
        temperature=float(scalar(inputs, S["temperature"], 1.0)),
        repetition_penalty=float(scalar(inputs, S["repetition_penalty"], 1.0)),
        presence_penalty=float(scalar(inputs, S["presence_penalty"], 0.0)),
        frequency_penalty=float(scalar(inputs, S["frequency_penalty"], 0.0)),
        min_tokens=int(scalar(inputs, S["min_tokens"], 0)),
        seed=int(seed) if seed is not None else None,
        streaming=bool(scalar(inputs, S["streaming"], False)),
        exclude_input=bool(scalar(inputs, S["exclude_input_in_output"], True)),
        stop_words=decode_word_list(inputs.get("stop_words_list")),
        bad_words=decode_word_list(inputs.get("bad_words_list")),
        return_perf_metrics=bool(scalar(inputs, S["return_perf_metrics"], False)),
        return_log_probs=bool(scalar(inputs, S["return_log_probs"], False)),
        num_return_sequences=int(scalar(inputs, S["num_return_sequences"], 1)),
        guide=guide_from_inputs(inputs),
    )
    return req, False


def _string(inputs: dict, spec: TensorSpec) -> str | None:
    v = scalar(inputs, spec)
    if v is None:
        return None
    try:
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)
    except UnicodeDecodeError:
        raise InvalidRequestError(f"{spec.name}: not valid UTF-8", spec.name) from None


def guide_from_inputs(inputs: dict, specs=None) -> Guide | None:
    """The request's guide from ``guided_decoding_guide_type`` and ``guided_decoding_guide`` (None without a type: a
    guide alone is ignored, as the backend ignores it)."""
    S = specs or ENGINE_INPUTS
    kind = _string(inputs, S["guided_decoding_guide_type"])
    if kind is None:
        return None
    return Guide(kind, _string(inputs, S["guided_decoding_guide"]) or None)


def engine_output_arrays(out: EngineOutput, wanted: set[str] | None = None,
                         batch_index: int | None = None, log_probs: list[float] | None = None,
                         sequence_index: int | None = None) -> dict[str, np.ndarray]:
    """The engine's outputs for one response, as the tensorrt_llm backend fills them: the ``wanted`` ones (all
    when the caller named none), ``batch_index`` for a row of a batch, ``sequence_index`` for one sequence of a
    request of several (num_return_sequences > 1; the response is that sequence's alone), and, for a request that set
    return_perf_metrics, the perf outputs. ``log_probs``, for a request that set return_log_probs: every generated
    token's so far, as the executor keeps them (a streamed response has them all beside only its new tokens):
    ``output_log_probs`` [1, beam, tokens] and ``cum_log_probs`` [1, beam], their sum."""
    values = {
        "output_ids": [out.tokens],  # [beam][tokens]
        "sequence_length": [len(out.tokens)],
        "num_input_tokens": out.num_input_tokens,
        "num_output_tokens": out.num_output_tokens,
    }
    if batch_index is not None:
        values["batch_index"] = batch_index
    if sequence_index is not None:
        values["sequence_index"] = sequence_index
    if log_probs is not None:
        values["output_log_probs"] = [log_probs]  # [beam][tokens]
        values["cum_log_probs"] = [sum(log_probs)]  # [beam]
    arrays = {k: _OUTPUTS[k].array(v) for k, v in values.items() if wanted is None or k in wanted}
    if out.perf is not None:
        p = out.perf
        blocks = -(-(out.num_input_tokens + out.num_output_tokens) // KV_BLOCK_TOKENS)
        perf = {"kv_cache_alloc_new_blocks": max(blocks - out.reused_blocks, 0), "kv_cache_reused_blocks": out.reused_blocks,
                "kv_cache_alloc_total_blocks": blocks, "arrival_time_ns": p.arrival_ns,
                "first_scheduled_time_ns": p.first_scheduled_ns, "first_token_time_ns": p.first_token_ns,
                "last_token_time_ns": p.last_token_ns, "acceptance_rate": 0.0, "total_accepted_draft_tokens": 0,
                "total_draft_tokens": 0}
        # all ten, as the backend writes them, less those not asked for: Triton drops those, so they would only cost
        # a tensor each per response (whether the config declares them all is checked when the request starts)
        arrays.update((k, _OUTPUTS[k].array(perf[k])) for k in template().backend.perf_outputs
                      if wanted is None or k in wanted)
    return arrays


_OUTPUTS = {s.name: s for s in template().outputs}
KV_BLOCK_TOKENS = 32  # TensorRT-LLM's default tokens_per_block: how the stand-ins count KV blocks


def engine_fields(req: EngineRequest) -> dict:
    """What a client (the front door, or token mode) sends to the engine model, as plain values by
    tensor name; ``engine_inputs`` makes them arrays, the HTTP client JSON."""
    d = {
        "input_ids": list(req.input_ids),
        "input_lengths": len(req.input_ids),
        "request_output_len": req.max_new_tokens,
        "pad_id": req.pad_id,
        "runtime_top_k": req.top_k,
        "runtime_top_p": req.top_p,
        "temperature": req.temperature,
        "repetition_penalty": req.repetition_penalty,
        "min_tokens": req.min_tokens,
        "streaming": req.streaming,
        "exclude_input_in_output": req.exclude_input,
    }
    if req.return_perf_metrics:
        d["return_perf_metrics"] = True
    if req.return_log_probs:
        d["return_log_probs"] = True
    if req.num_return_sequences != 1:  # absent: one (the backend's default)
        d["num_return_sequences"] = req.num_return_sequences
    if req.presence_penalty or req.frequency_penalty:  # TensorRT-LLM's defaults are 0
        d["presence_penalty"], d["frequency_penalty"] = req.presence_penalty, req.frequency_penalty
    if req.end_id is not None:
        d["end_id"] = req.end_id
    if req.seed is not None:
        d["seed"] = req.seed
    if req.stop_words:
        d["stop_words_list"] = encode_word_list(req.stop_words)
    if req.bad_words:
        d["bad_words_list"] = encode_word_list(req.bad_words)
    if req.guide is not None:
        d["guided_decoding_guide_type"] = req.guide.type
        if req.guide.text is not None:
            d["guided_decoding_guide"] = req.guide.text
    return d


def engine_inputs(req: EngineRequest) -> dict[str, np.ndarray]:
    """The engine model's input arrays for a request, batch dimension included."""
    return {k: ENGINE_INPUTS[k].array(v) for k, v in engine_fields(req).items()}


def stop_request_inputs() -> dict[str, np.ndarray]:
    """A TensorRT-LLM stop request (sent with the id of the request to cancel)."""
    values = {"input_ids": [0], "input_lengths": 1, "request_output_len": 1, "stop": True}
    return {k: ENGINE_INPUTS[k].array(v) for k, v in values.items()}


def text_outputs(text: str, num_input_tokens: int | None = None, num_output_tokens: int | None = None,
                 finish_reason: str | None = None, turns_dropped: int | None = None,
                 cached_tokens: int | None = None) -> dict[str, np.ndarray]:
    """One front-door response's outputs: the text, and on the final response the counts and reason."""
    out = {"text_output": _TEXT_OUTPUT.vector(text)}  # the per-token path: one array
    for k, v in (("num_input_tokens", num_input_tokens), ("num_output_tokens", num_output_tokens),
                 ("finish_reason", finish_reason), ("turns_dropped", turns_dropped),
                 ("cached_tokens", cached_tokens)):
        if v is not None:
            out[k] = FRONT_DOOR_OUTPUTS[k].vector(v)
    return out


_TEXT_OUTPUT = FRONT_DOOR_OUTPUTS["text_output"]


def sequence_index(outputs: dict) -> int:
    """Which sequence an engine response is (0 where not reported: a request of one sequence)."""
    v = outputs.get("sequence_index")
    return int(v.reshape(-1)[0]) if v is not None and v.size else 0


def reused_blocks(outputs: dict) -> int:
    """An engine response's count of KV blocks reused from the prefix cache (0 where not reported)."""
    v = outputs.get("kv_cache_reused_blocks")
    return int(v.reshape(-1)[0]) if v is not None and v.size else 0
