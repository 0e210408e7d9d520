"""What an engine takes and gives: requests and outputs in token space (the ``tensorrt_llm`` model's
vocabulary), the limits it enforces, and the checks it makes before a request takes a slot."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from ..errors import InvalidRequestError, ZiyaError
from ..finish import FinishReason
from ..text.guide import GUIDE_TYPES, Guide
from ..text.sampling import MAX_SEED, MAX_STOP_CHARS, MAX_STOP_STRINGS, MIN_TEMPERATURE, SamplingParams

# stop_words_list / bad_words_list: words, and ids in all. The ids bound holds the most the fronts let through:
# MAX_STOP_STRINGS strings of MAX_STOP_CHARS characters, each character at most 4 byte-fallback tokens, plus a
# word-start token each, and the template's own stop words
MAX_WORDS = 64
MAX_WORD_IDS = MAX_STOP_STRINGS * (MAX_STOP_CHARS * 4 + 1) + 256


@dataclass
class EngineRequest:
    """One generation request in token space (what the ``tensorrt_llm`` model receives)."""

    input_ids: list[int]
    max_new_tokens: int
    id: str = ""
    end_id: int | None = None
    pad_id: int = 0
    top_k: int = 0
    top_p: float = 0.0
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    min_tokens: int = 0
    seed: int | None = None
    streaming: bool = False
    exclude_input: bool = True
    stop_words: list[list[int]] = field(default_factory=list)
    bad_words: list[list[int]] = field(default_factory=list)
    return_perf_metrics: bool = False  # tensorrt_llm then fills kv_cache_reused_blocks
    return_log_probs: bool = False  # each generated token's log probability (output_log_probs, cum_log_probs)
    # sequences generated for the prompt (TensorRT-LLM's num_return_sequences, beam width 1): each its own slot and
    # seed (seed + its index), each response one sequence's with its sequence_index (contracts/num-return-sequences.json)
    num_return_sequences: int = 1
    guide: Guide | None = None  # guided decoding (guided_decoding_guide_type, guided_decoding_guide)

    @classmethod
    def from_params(cls, input_ids: list[int], params: SamplingParams, *, end_id: int | None, pad_id: int,
                    request_id: str = "", stop_words=(), bad_words=(), return_perf_metrics: bool = False,
                    return_log_probs: bool = False, num_return_sequences: int = 1,
                    guide: Guide | None = None) -> "EngineRequest":
        """The streaming engine request for a prompt and its sampling settings (the front door's and the
        client's token mode's one rule). A greedy request that asks for log probabilities goes with temperature 1:
        the token is the same (the argmax), and TensorRT-LLM scales the logits by 1 / (temperature + 1e-6) before it
        takes log probabilities, greedy or not, so at the temperature the choice ignores (0 most often) every one
        would come back about 0 (contracts/log-probs.json)."""
        return cls(
            input_ids=list(input_ids),
            max_new_tokens=params.max_new_tokens,
            id=request_id,
            end_id=end_id,
            pad_id=pad_id,
            top_k=params.wire_top_k,
            top_p=params.top_p,
            temperature=1.0 if return_log_probs and params.greedy else params.temperature,
            repetition_penalty=params.repetition_penalty,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            min_tokens=params.min_tokens,
            seed=params.seed,
            streaming=True,
            stop_words=[list(w) for w in stop_words],
            bad_words=[list(w) for w in bad_words],
            return_perf_metrics=return_perf_metrics,
            return_log_probs=return_log_probs,
            num_return_sequences=num_return_sequences,
            guide=guide,
        )

    def sequence_seed(self, index: int) -> int | None:
        """Sequence ``index``'s seed: the request's plus the index, in uint64 (TensorRT-LLM's child requests); None
        (each draws its own) when the request has none."""
        return None if self.seed is None else (self.seed + index) % (MAX_SEED + 1)

    @property
    def greedy(self) -> bool:
        """TensorRT-LLM's convention: top_k 1, or top_k 0 with top_p 0, is greedy; so is temperature 0."""
        return self.top_k == 1 or (self.top_k == 0 and self.top_p == 0.0) or self.temperature == 0.0


@dataclass(frozen=True)
class PerfMetrics:
    """A request's timing as TensorRT-LLM reports it with return_perf_metrics (steady-clock ns)."""

    arrival_ns: int
    first_scheduled_ns: int
    first_token_ns: int
    last_token_ns: int


@dataclass
class EngineOutput:
    tokens: list[int]
    final: bool = False
    finish_reason: FinishReason | None = None
    num_input_tokens: int = 0
    num_output_tokens: int = 0
    error: ZiyaError | None = None
    reused_blocks: int = 0  # KV-cache blocks of an earlier request's prefix this one started from
    perf: PerfMetrics | None = None  # when the request set return_perf_metrics
    # when the request set return_log_probs: one per generated token of ``tokens``, in order (all of them; a
    # non-streamed response that echoes the prompt has them for its generated tail only)
    log_probs: list[float] | None = None
    # which of the request's sequences this output is (num_return_sequences > 1), and whether that sequence has ended
    # (the executor's isSequenceFinal); ``final`` is the whole request's end (isFinal: every sequence has ended)
    sequence_index: int = 0
    sequence_final: bool = False


def coalesce(outs: list[EngineOutput]) -> list[EngineOutput]:
    """Merge consecutive token outputs of one sequence into one (what piled up while the consumer was busy); an error
    output stays on its own (it carries no tokens), and so does a sequence's last."""
    merged: list[EngineOutput] = []
    for o in outs:
        prev = merged[-1] if merged else None
        if (prev is None or o.error is not None or prev.error is not None or prev.final or prev.sequence_final
                or prev.sequence_index != o.sequence_index):
            merged.append(o)
            continue
        merged[-1] = EngineOutput(
            prev.tokens + o.tokens,
            final=o.final,
            finish_reason=o.finish_reason,
            num_input_tokens=o.num_input_tokens,
            num_output_tokens=o.num_output_tokens,
            reused_blocks=max(prev.reused_blocks, o.reused_blocks),
            perf=o.perf,
            log_probs=None if prev.log_probs is None and o.log_probs is None
            else (prev.log_probs or []) + (o.log_probs or []),
            sequence_index=o.sequence_index,
            sequence_final=o.sequence_final,
        )
    return merged


Sink = Callable[[EngineOutput], None]


@dataclass(frozen=True)
class EngineLimits:
    max_slots: int = 8  # requests decoded together (max_batch_size)
    max_queue: int = 64  # requests waiting for a slot before new ones are refused
    max_input_len: int = 1024
    max_seq_len: int = 2048
    vocab_size: int = 32000


def validate(req: EngineRequest, lim: EngineLimits) -> None:
    """Reject what the engine cannot do, naming the field and the limit."""
    n = len(req.input_ids)
    if n == 0:
        raise InvalidRequestError("input_ids: empty prompt", "input_ids")
    if n > lim.max_input_len:
        raise InvalidRequestError(
            f"input_ids: {n} tokens, over max_input_len {lim.max_input_len} by {n - lim.max_input_len}", "input_ids"
        )
    bad = [t for t in req.input_ids if not 0 <= t < lim.vocab_size]
    if bad:
        raise InvalidRequestError(f"input_ids: id {bad[0]} outside the vocabulary of {lim.vocab_size}", "input_ids")
    if req.max_new_tokens < 1:
        raise InvalidRequestError(f"request_output_len: {req.max_new_tokens} must be at least 1", "request_output_len")
    if n + req.max_new_tokens > lim.max_seq_len:
        raise InvalidRequestError(
            f"request_output_len: {n} input + {req.max_new_tokens} output tokens exceed max_seq_len "
            f"{lim.max_seq_len}; at most {lim.max_seq_len - n} output tokens fit",
            "request_output_len",
        )
    k = req.num_return_sequences
    if not 1 <= k <= lim.max_slots:
        raise InvalidRequestError(f"num_return_sequences: {k} sequences asked for; each takes one of the engine's "
                                  f"{lim.max_slots} slots (max_batch_size), so 1 to {lim.max_slots}",
                                  "num_return_sequences")
    checks = [  # NaN fails every comparison, so it is refused too
        ("runtime_top_k", req.top_k, req.top_k >= 0, "must be >= 0"),
        ("runtime_top_p", req.top_p, 0.0 <= req.top_p <= 1.0, "must be in [0, 1]"),
        ("temperature", req.temperature, req.temperature == 0.0 or MIN_TEMPERATURE <= req.temperature < math.inf,
         f"must be 0 (greedy) or finite and at least {MIN_TEMPERATURE}"),
        ("repetition_penalty", req.repetition_penalty, 0.0 < req.repetition_penalty < math.inf, "must be > 0 and finite"),
        ("presence_penalty", req.presence_penalty, -2.0 <= req.presence_penalty <= 2.0, "must be in [-2, 2]"),
        ("frequency_penalty", req.frequency_penalty, -2.0 <= req.frequency_penalty <= 2.0, "must be in [-2, 2]"),
        ("min_tokens", req.min_tokens, req.min_tokens >= 0, "must be >= 0"),
        ("seed", req.seed, req.seed is None or 0 <= req.seed <= MAX_SEED, "must fit in uint64"),
    ]
    for name, value, ok, why in checks:
        if not ok:
            raise InvalidRequestError(f"{name}: {value} {why}", name)
    if req.guide is not None and req.guide.type not in GUIDE_TYPES:  # the backend would drop it and run unguided
        raise InvalidRequestError(f"guided_decoding_guide_type: {req.guide.type!r} is not one of "
                                  f"{', '.join(GUIDE_TYPES)} (the tensorrt_llm backend ignores any other)",
                                  "guided_decoding_guide_type")
    for name, words in (("stop_words_list", req.stop_words), ("bad_words_list", req.bad_words)):
        n_ids = sum(len(w) for w in words)
        if len(words) > MAX_WORDS or n_ids > MAX_WORD_IDS:
            raise InvalidRequestError(f"{name}: {len(words)} words of {n_ids} ids; at most {MAX_WORDS} words "
                                      f"and {MAX_WORD_IDS} ids", name)
        bad = [t for w in words for t in w if not 0 <= t < lim.vocab_size]
        if bad:
            raise InvalidRequestError(f"{name}: id {bad[0]} outside the vocabulary of {lim.vocab_size}", name)
