"""Sampling parameters with the Ziya2-13B-Chat card's defaults, validated once."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from ..errors import InvalidRequestError

MAX_SEED = 2**64 - 1  # the engines take the seed as UINT64
MAX_INT32 = 2**31 - 1  # and max_tokens, top_k and min_tokens as INT32: a larger number would wrap, never be refused
MAX_STOP_STRINGS = 16  # also the most bad words
MAX_STOP_CHARS = 256
MIN_TEMPERATURE = 1e-5  # below it (and above 0) logits / temperature overflow: 0 is the greedy setting


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation settings. Defaults are the model card's."""

    max_new_tokens: int = 512
    temperature: float = 0.85
    top_p: float = 0.9
    top_k: int = 0  # 0 = no top-k filter
    repetition_penalty: float = 1.05
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every token already generated
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence in the generated tokens
    do_sample: bool = True
    seed: int | None = None
    stop: tuple[str, ...] = field(default=())
    stop_on_eos: bool = True
    min_tokens: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        _check_int("max_new_tokens", self.max_new_tokens, lo=1, hi=MAX_INT32)
        _check_float("temperature", self.temperature, lo=0.0, lo_open=False)
        if 0.0 < self.temperature < MIN_TEMPERATURE:
            raise InvalidRequestError(f"temperature: {self.temperature} is too small to sample with; use 0 for "
                                      f"greedy decoding, or at least {MIN_TEMPERATURE}", "temperature")
        _check_float("top_p", self.top_p, lo=0.0, hi=1.0, lo_open=True)
        _check_int("top_k", self.top_k, lo=0, hi=MAX_INT32)
        _check_float("repetition_penalty", self.repetition_penalty, lo=0.0, lo_open=True)
        _check_float("presence_penalty", self.presence_penalty, lo=-2.0, hi=2.0)
        _check_float("frequency_penalty", self.frequency_penalty, lo=-2.0, hi=2.0)
        _check_int("min_tokens", self.min_tokens, lo=0, hi=MAX_INT32)
        if self.seed is not None:
            _check_int("seed", self.seed, lo=0, hi=MAX_SEED)
        check_words("stop", self.stop, "stop strings")

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic argmax (no sampling or temperature 0)."""
        return not self.do_sample or self.temperature == 0.0 or self.top_k == 1

    @property
    def wire_top_k(self) -> int:
        """top_k as the engines and the front door take it: there is no do_sample on the wire, and
        TensorRT-LLM decodes greedily for top_k 1."""
        return 1 if self.greedy else self.top_k

    def with_(self, **changes) -> "SamplingParams":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SamplingParams":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise InvalidRequestError(f"unknown sampling parameter(s): {', '.join(unknown)}", unknown[0])
        return cls(**known)


def check_words(field: str, words, what: str) -> None:
    """Stop strings or bad words: at most MAX_STOP_STRINGS, each non-empty text of at most MAX_STOP_CHARS."""
    if len(words) > MAX_STOP_STRINGS:
        raise InvalidRequestError(f"{field}: {len(words)} {what} given, at most {MAX_STOP_STRINGS} allowed", field)
    for s in words:
        if not isinstance(s, str) or not s:
            raise InvalidRequestError(f"{field}: {what} must be non-empty text", field)
        if len(s) > MAX_STOP_CHARS:
            raise InvalidRequestError(f"{field}: one of the {what} is {len(s)} characters, at most "
                                      f"{MAX_STOP_CHARS} allowed", field)


def _check_int(name: str, v, lo: int | None = None, hi: int | None = None) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidRequestError(f"{name}: expected an integer, got {v!r}", name)
    if lo is not None and v < lo:
        raise InvalidRequestError(f"{name}: {v} is below the minimum {lo}", name)
    if hi is not None and v > hi:
        raise InvalidRequestError(f"{name}: {v} is above the maximum {hi}", name)


def _check_float(name: str, v, lo: float, hi: float | None = None, lo_open: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InvalidRequestError(f"{name}: expected a number, got {v!r}", name)
    if math.isnan(v) or math.isinf(v):
        raise InvalidRequestError(f"{name}: must be a finite number, got {v}", name)
    if (v <= lo) if lo_open else (v < lo):
        bound = f"greater than {lo}" if lo_open else f"at least {lo}"
        raise InvalidRequestError(f"{name}: {v} is out of range, must be {bound}", name)
    if hi is not None and v > hi:
        raise InvalidRequestError(f"{name}: {v} is out of range, must be at most {hi}", name)
