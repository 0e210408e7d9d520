"""Per-request next-token choice: repetition penalty, bad words, min_tokens, greedy or
temperature/top-k/top-p sampling with a per-request seed; and, for a request that asks (``return_log_probs``), the
chosen token's log probability as TensorRT-LLM reports it with ``normalize_log_probs`` false (contracts/log-probs.json):
log-softmax in float32 over the whole vocabulary of the logits the token was chosen from (penalised, banned, over the
temperature), before any top-k/top-p cut. A guided request's grammar mask (``guided.GuideState``) comes first, as
TensorRT-LLM's guided decoder masks the logits before its sampling layers: a token the grammar does not allow is never
chosen, and the log probability is taken over what it allows. Where the request's own bans (bad words, the end token
before ``min_tokens``) would leave no token the grammar allows, the grammar wins and the bans give way."""

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

    def choose(self, logits: torch.Tensor, req, history: list[int], generated: list[int],
               guide=None) -> tuple[int, float | None]:
        """The next token, and its log probability when the request asked for it (else None: no extra work);
        ``guide``: the request's ``GuideState`` (guided decoding), whose mask applies first."""
        logits = logits.float()
        if guide is not None:
            logits = guide.apply(logits.clone())
        seen = torch.tensor(sorted(set(history)), dtype=torch.long)
        logits = apply_repetition_penalty(logits, seen, req.repetition_penalty)
        logits = apply_presence_frequency(logits, generated, req.presence_penalty, req.frequency_penalty)
        ban = banned_next(generated, req.bad_words)
        if req.end_id is not None and len(generated) < req.min_tokens:
            ban.append(req.end_id)
        if ban:
            banned = logits.clone()
            banned[ban] = float("-inf")
            if guide is None or bool(torch.isfinite(banned).any()):
                logits = banned
        if req.greedy:
            token = int(torch.argmax(logits))
            if not req.return_log_probs:
                return token, None
            # TensorRT-LLM scales a greedy request's logits too, by 1 / (temperature + 1e-6), unless it is the default 1
            scaled = logits if req.temperature == 1.0 else logits / (req.temperature + 1e-6)
            return token, log_prob(scaled, token)
        scaled = logits / req.temperature
        probs = torch.softmax(filter_top_k_top_p(scaled, req.top_k, req.top_p), dim=-1)
        token = int(torch.multinomial(probs, 1, generator=self.gen))
        return token, (log_prob(scaled, token) if req.return_log_probs else None)


def log_prob(logits: torch.Tensor, token: int) -> float:
    """``token``'s log probability under the softmax of ``logits`` over the whole vocabulary, in float32."""
    return float(torch.log_softmax(logits.float(), dim=-1)[token])
