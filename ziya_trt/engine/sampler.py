"""Per-request next-token choice: repetition penalty, bad words, min_tokens, greedy or
temperature/top-k/top-p sampling with a per-request seed."""

from __future__ import annotations

import torch


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """transformers' and TensorRT-LLM's rule over prompt + output: divide positive logits, multiply negative."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    picked = logits.gather(0, seen)
    logits = logits.clone()
    logits.scatter_(0, seen, torch.where(picked < 0, picked * penalty, picked / penalty))
    return logits


def apply_presence_frequency(logits: torch.Tensor, generated: list[int], presence: float,
                             frequency: float) -> torch.Tensor:
    """OpenAI's penalties over the generated tokens: minus ``frequency`` per occurrence, minus ``presence`` once."""
    if not generated or (presence == 0.0 and frequency == 0.0):
        return logits
    ids, counts = torch.tensor(generated, dtype=torch.long).unique(return_counts=True)
    logits = logits.clone()
    logits[ids] -= frequency * counts.to(logits.dtype) + presence
    return logits


def banned_next(generated: list[int], bad_words: list[list[int]]) -> list[int]:
    """Last tokens of bad-word sequences whose prefix the output currently ends with."""
    out = []
    for w in bad_words:
        if w and (len(w) == 1 or generated[-(len(w) - 1) :] == w[:-1]):
            out.append(w[-1])
    return out


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0 and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop tokens once the mass *before* them already reaches top_p (always keep the first)
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.clone()
        logits[idx[drop]] = float("-inf")
    return logits


class Sampler:
    """Holds one request's generator so a seed gives the same tokens whatever else is batched."""

    def __init__(self, seed: int | None):
        self.gen = torch.Generator()
        self.gen.manual_seed(seed % (2**63) if seed is not None else torch.seed() % (2**63))

    def choose(self, logits: torch.Tensor, req, history: list[int], generated: list[int]) -> int:
        logits = logits.float()
        seen = torch.tensor(sorted(set(history)), dtype=torch.long)
        logits = apply_repetition_penalty(logits, seen, req.repetition_penalty)
        logits = apply_presence_frequency(logits, generated, req.presence_penalty, req.frequency_penalty)
        ban = banned_next(generated, req.bad_words)
        if req.end_id is not None and len(generated) < req.min_tokens:
            ban.append(req.end_id)
        if ban:
            logits = logits.clone()
            logits[ban] = float("-inf")
        if req.greedy:
            return int(torch.argmax(logits))
        logits = filter_top_k_top_p(logits / req.temperature, req.top_k, req.top_p)
        probs = torch.softmax(logits, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.gen))
