"""What to send: exact-length synthetic prompts, the bundled bilingual chat set, or a JSONL file."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from ziya_trt.errors import InvalidRequestError

CHAT_SET = Path(__file__).parent / "data" / "chat_zh_en.jsonl"


@dataclass(frozen=True)
class Item:
    prompt: str  # raw prompt text (already formatted) or a user message, see ``raw``
    max_tokens: int
    input_tokens: int | None = None  # known exactly for synthetic prompts
    raw: bool = True  # send as-is (no chat template)


FILLER = Path(__file__).parent / "data" / "filler_zh_en.txt"


def _pool(seed: int, n: int = 400, path: Path = FILLER) -> str:
    """Filler text for exact-length prompts: lines of one to three bilingual sentences, with a number
    now and then, drawn by the seed. (The tiny fixture tokenizer is trained on the same sentences, so
    text replayed by the synthetic engine re-tokenizes to the same count on it.)"""
    sentences = [s for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        line = " ".join(rng.choice(sentences) for _ in range(rng.randint(1, 3)))
        lines.append(line + (f" {rng.randint(0, 10**6)}" if i % 11 == 0 else ""))
    return " ".join(lines)


def exact_prompt(tok, isl: int, rng: random.Random, pool: str, tries: int = 50) -> str:
    """A prompt that the tokenizer (bos included) encodes to exactly ``isl`` tokens. A start point
    whose first character takes several pieces cannot give tiny lengths, so other starts are tried."""
    for _ in range(tries):
        prompt = _prompt_from(tok, isl, rng.randrange(0, max(1, len(pool) // 2)), pool)
        if prompt is not None:
            return prompt
    raise InvalidRequestError(f"isl: could not build a prompt of exactly {isl} tokens", "isl")


def _prompt_from(tok, isl: int, start: int, pool: str) -> str | None:
    text = pool[start:] + " " + pool
    lo, hi = 1, min(len(text), isl * 8)
    while lo < hi:  # longest prefix with at most isl tokens
        mid = (lo + hi + 1) // 2
        if tok.count(text[:mid]) <= isl:
            lo = mid
        else:
            hi = mid - 1
    prompt = text[:lo]
    for filler in " a", "a", " ":
        while tok.count(prompt) < isl and tok.count(prompt + filler) <= isl:
            prompt += filler
    return prompt if prompt and tok.count(prompt) == isl else None


def synthetic(tok, n: int, isl: int, osl: int, seed: int = 0) -> list[Item]:
    rng = random.Random(seed)
    pool = _pool(seed)
    return [Item(exact_prompt(tok, isl, rng, pool), osl, isl) for _ in range(n)]


def chat_set(n: int, seed: int = 0, path: Path = CHAT_SET, default_max_tokens: int = 256) -> list[Item]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(seed)
    picks = [rows[rng.randrange(len(rows))] for _ in range(n)]
    return [Item(r["prompt"], int(r.get("max_tokens", default_max_tokens)), None, raw=False) for r in picks]


def from_jsonl(path: str | Path, n: int | None = None, default_max_tokens: int = 256) -> list[Item]:
    """Lines of ``{"prompt": "...", "max_tokens": N}`` (a user message) or ``{"text": "..."}`` (raw)."""
    items = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidRequestError(f"{path}:{i}: not JSON ({e})", "dataset") from None
        if "prompt" in d:
            items.append(Item(d["prompt"], int(d.get("max_tokens", default_max_tokens)), raw=False))
        elif "text" in d:
            items.append(Item(d["text"], int(d.get("max_tokens", default_max_tokens)), raw=True))
        else:
            raise InvalidRequestError(f"{path}:{i}: needs 'prompt' or 'text'", "dataset")
    if not items:
        raise InvalidRequestError(f"{path}: no prompts", "dataset")
    return items if n is None else [items[i % len(items)] for i in range(n)]
