"""Why a generation ended: the reasons every layer reports (engine, front door, client)."""

from __future__ import annotations

from enum import Enum


class FinishReason(str, Enum):
    STOP = "stop"  # a stop string matched
    LENGTH = "length"  # max_new_tokens reached
    EOS = "eos"  # the end-of-sequence token
    CANCELLED = "cancelled"
    ERROR = "error"


def reason_at_end(cancelled: bool, n_generated: int, max_new_tokens: int | None) -> FinishReason:
    """The reason when the engine's stream ended without the text seeing eos or a stop string:
    cancelled; the length limit; or else the engine stopped on its own (end id, token stop word)."""
    if cancelled:
        return FinishReason.CANCELLED
    if max_new_tokens is not None and n_generated >= max_new_tokens:
        return FinishReason.LENGTH
    return FinishReason.EOS
