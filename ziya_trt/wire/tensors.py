"""Every Triton tensor name and dtype this project uses, in one place.

The engine inputs sent and read are a subset of TensorRT-LLM 1.2.1's ``tensorrt_llm`` model (its outputs, and the
whole model as rendered, are ``trtllm_template.py``'s); text tensors a subset of
its ``tensorrt_llm_bls``/``ensemble`` models, plus the few extras listed in ``FRONT_DOOR_EXTRAS``.
Tests check every name against the 1.2.1 facts in ``contracts/``. Every array the project sends or
builds for Triton is made by a ``TensorSpec`` from here (``array``, ``vector``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NP_DTYPES = {
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_UINT64": np.uint64,
    "TYPE_FP32": np.float32,
    "TYPE_BOOL": np.bool_,
    "TYPE_STRING": np.object_,
}
CLIENT_DTYPES = {  # tritonclient's datatype strings
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_UINT64": "UINT64",
    "TYPE_FP32": "FP32",
    "TYPE_BOOL": "BOOL",
    "TYPE_STRING": "BYTES",
}
INT_RANGES = {  # what each integer dtype holds
    "TYPE_INT32": (-(2**31), 2**31 - 1),
    "TYPE_INT64": (-(2**63), 2**63 - 1),
    "TYPE_UINT64": (0, 2**64 - 1),
}
# a wire datatype string (gRPC/HTTP) to its numpy dtype
NP_BY_WIRE = {CLIENT_DTYPES[k]: v for k, v in NP_DTYPES.items()}


def _encode(v):
    return v.encode("utf-8") if isinstance(v, str) else v


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton config spelling, e.g. TYPE_INT32
    dims: tuple[int, ...]
    optional: bool = True
    # how the config declares it beyond its shape (the tensorrt_llm template's scalars are dims [1] with
    # ``reshape: { shape: [ ] }``; its variable-length inputs may be batched ragged)
    reshape: tuple[int, ...] | None = None
    allow_ragged_batch: bool = False

    @property
    def np_dtype(self):
        return NP_DTYPES[self.data_type]

    @property
    def client_dtype(self) -> str:
        return CLIENT_DTYPES[self.data_type]

    @property
    def is_string(self) -> bool:
        return self.data_type == "TYPE_STRING"

    def array(self, value) -> np.ndarray:
        """``value`` as this tensor for one request, batch dimension included: a scalar becomes
        ``[[v]]``, a sequence ``[seq]``; an array keeps its shape and takes this dtype. A Python integer that
        does not fit an integer dtype is refused (numpy would wrap it)."""
        if isinstance(value, np.ndarray):
            return value if value.dtype == self.np_dtype else value.astype(self.np_dtype)
        if self.is_string:
            vals = value if isinstance(value, (list, tuple)) else [value]
            return np.array([[_encode(v) for v in vals]], dtype=np.object_)
        rows = [list(value)] if isinstance(value, (list, tuple)) else [[value]]
        if self.data_type in INT_RANGES:
            lo, hi = INT_RANGES[self.data_type]
            for v in rows[0]:
                if isinstance(v, int) and not lo <= v <= hi:
                    from ..errors import InvalidRequestError

                    raise InvalidRequestError(f"{self.name}: {v} does not fit {self.client_dtype} ({lo} to {hi})",
                                              self.name)
        return np.asarray(rows, dtype=self.np_dtype)

    def vector(self, *values) -> np.ndarray:
        """A flat ``[n]`` array of this dtype (how the front door's responses carry their outputs)."""
        if self.is_string:
            return np.array([_encode(v) for v in values], dtype=np.object_)
        return np.asarray(values, dtype=self.np_dtype)


def _specs(*rows) -> dict[str, TensorSpec]:
    return {r[0]: TensorSpec(*r) for r in rows}


I32, FP32, U64, BOOL, STR = "TYPE_INT32", "TYPE_FP32", "TYPE_UINT64", "TYPE_BOOL", "TYPE_STRING"

# --- the engine model (tensorrt_llm, and our reference/synthetic stand-ins) -----------------
ENGINE_INPUTS = _specs(
    ("input_ids", I32, (-1,)),  # optional in 1.2.1 (prompt tables); our engines require it
    ("input_lengths", I32, (1,), False),
    ("request_output_len", I32, (1,), False),
    ("end_id", I32, (1,)),
    ("pad_id", I32, (1,)),
    ("stop_words_list", I32, (2, -1)),
    ("bad_words_list", I32, (2, -1)),
    ("runtime_top_k", I32, (1,)),
    ("runtime_top_p", FP32, (1,)),
    ("temperature", FP32, (1,)),
    ("repetition_penalty", FP32, (1,)),
    ("presence_penalty", FP32, (1,)),
    ("frequency_penalty", FP32, (1,)),
    ("min_tokens", I32, (1,)),
    ("seed", U64, (1,)),
    ("streaming", BOOL, (1,)),
    ("stop", BOOL, (1,)),
    ("exclude_input_in_output", BOOL, (1,)),
    ("return_perf_metrics", BOOL, (1,)),
    ("return_log_probs", BOOL, (1,)),
    ("num_return_sequences", I32, (1,)),  # sequences for the prompt, each its own slot (beam width 1)
    ("guided_decoding_guide_type", STR, (1,)),  # json, json_schema, regex, ebnf_grammar (text.guide.GUIDE_TYPES)
    ("guided_decoding_guide", STR, (1,)),  # the schema, regex or grammar (none for json)
)
# the engine's outputs: every one of the tensorrt_llm template's (wire/trtllm_template.py)
# what the front door asks the engine for: tensorrtllm_backend's response filler throws unless a
# request asks for both output_ids and sequence_length, so asking for output_ids alone fails there;
# the reused-blocks count comes with return_perf_metrics; sequence_index (which sequence a response is) comes only for
# a request of num_return_sequences > 1 (contracts/num-return-sequences.json)
FRONT_DOOR_ENGINE_OUTPUTS = ("output_ids", "sequence_length", "kv_cache_reused_blocks", "sequence_index")
# asked for as well by a request that wants its tokens' log probabilities (with return_log_probs): the backend writes
# it only then, with every generated token's so far in each streamed response (contracts/log-probs.json)
LOG_PROB_OUTPUTS = ("output_log_probs",)

# --- the text front door (named like tensorrt_llm_bls so stock clients work unchanged) -------
FRONT_DOOR_INPUTS = _specs(
    ("text_input", STR, (1,)),  # a raw prompt, which the caller is trusted to have built; or:
    ("messages", STR, (1,)),  # a conversation, JSON [{"role", "content"}]: the server applies its template
    ("max_tokens", I32, (1,), False),
    ("stop_words", STR, (-1,)),
    ("bad_words", STR, (-1,)),
    ("end_id", I32, (1,)),
    ("pad_id", I32, (1,)),
    ("top_k", I32, (1,)),
    ("top_p", FP32, (1,)),
    ("temperature", FP32, (1,)),
    ("repetition_penalty", FP32, (1,)),
    ("presence_penalty", FP32, (1,)),
    ("frequency_penalty", FP32, (1,)),
    ("min_tokens", I32, (1,)),
    ("seed", U64, (1,)),
    ("stream", BOOL, (1,)),
    ("exclude_input_in_output", BOOL, (1,)),
    ("num_return_sequences", I32, (1,)),  # sequences for the prompt: each response then says which (sequence_index)
    ("guided_decoding_guide_type", STR, (1,)),  # structured outputs, as tensorrt_llm_bls takes them
    ("guided_decoding_guide", STR, (1,)),
)
FRONT_DOOR_OUTPUTS = _specs(
    ("text_output", STR, (-1,)),
    ("num_input_tokens", I32, (1,)),
    ("num_output_tokens", I32, (1,)),
    ("finish_reason", STR, (1,)),
    ("turns_dropped", I32, (1,)),  # oldest whole turns left out of a conversation to fit
    ("cached_tokens", I32, (1,)),  # prompt tokens whose KV came from the engine's prefix cache
    ("sequence_index", I32, (1,)),  # which sequence a response is, for a request of num_return_sequences > 1
)
# names the stock models do not have; everything else must exist in the 1.2.1 facts
FRONT_DOOR_EXTRAS = frozenset({"messages", "finish_reason", "turns_dropped", "cached_tokens"})
# required in the stock models, optional here: a request gives text_input or messages
FRONT_DOOR_RELAXED = frozenset({"text_input"})
