"""The reference engine: a transformers LlamaForCausalLM run on CPU with in-flight batching.

In the style of gpt-fast: a preallocated KV cache with one slot per request, a prefill per new
request, and one batched decode step over all active slots. The layer weights and the rotary
embedding are the model's own modules, so greedy output equals ``model.generate``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InvalidRequestError
from ..finish import FinishReason
from .guided import GrammarCache, GuideState
from .loop import EngineLoop, Live
from .prefix_cache import PrefixCache
from .request import EngineLimits, EngineRequest
from .sampler import Sampler

log = logging.getLogger(__name__)


def load_model(model_dir: str | Path, dtype: str = "float32"):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
    model.eval()
    return model


class SlotModel:
    """The forward pass over a slot KV cache."""

    def __init__(self, model, n_slots: int, max_seq_len: int):
        cfg = model.config
        self.model = model
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        dtype = next(model.parameters()).dtype
        shape = (cfg.num_hidden_layers, n_slots, self.n_kv, max_seq_len, self.head_dim)
        self.k = torch.zeros(shape, dtype=dtype)
        self.v = torch.zeros(shape, dtype=dtype)
        self.kv_bytes = 2 * self.k.numel() * self.k.element_size()

    @torch.inference_mode()
    def prefill(self, slot: int, ids: list[int], start: int = 0) -> torch.Tensor:
        """The logits after ``ids``; the KV of ``ids[:start]`` is already in the slot (a reused prefix)."""
        tokens = torch.tensor([ids[start:]], dtype=torch.long)
        pos = torch.arange(start, len(ids)).unsqueeze(0)
        return self._forward(tokens, pos, slots=torch.tensor([slot]), prefill=True, start=start)[0]

    @torch.inference_mode()
    def decode(self, slots: list[int], tokens: list[int], positions: list[int]) -> torch.Tensor:
        t = torch.tensor(tokens, dtype=torch.long).unsqueeze(1)
        pos = torch.tensor(positions, dtype=torch.long).unsqueeze(1)
        return self._forward(t, pos, slots=torch.tensor(slots), prefill=False)

    def _forward(self, tokens, pos, slots, prefill: bool, start: int = 0) -> torch.Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        m = self.model.model
        h = m.embed_tokens(tokens)
        cos, sin = m.rotary_emb(h, pos)
        B, T = tokens.shape
        L = int(pos.max()) + 1
        mask = None
        if not prefill:  # each row attends to its own positions 0..pos
            mask = torch.arange(L).view(1, 1, 1, L) <= pos.view(B, 1, 1, 1)
        elif start:  # the new tokens attend to the reused prefix and causally to each other
            mask = torch.arange(L).view(1, 1, 1, L) <= pos.view(1, 1, T, 1)
        for i, layer in enumerate(m.layers):
            a = layer.self_attn
            x = layer.input_layernorm(h)
            q = a.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = a.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            v = a.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            if prefill:
                self.k[i, slots[0], :, start : start + T] = k[0]
                self.v[i, slots[0], :, start : start + T] = v[0]
                if start:
                    kc, vc = self.k[i, slots, :, :L], self.v[i, slots, :, :L]
                    o = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, enable_gqa=self.n_kv != self.n_heads)
                else:
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_heads)
            else:
                p = pos[:, 0]
                self.k[i, slots, :, p] = k[:, :, 0]
                self.v[i, slots, :, p] = v[:, :, 0]
                kc, vc = self.k[i, slots, :, :L], self.v[i, slots, :, :L]
                o = F.scaled_dot_product_attention(q, kc, vc, attn_mask=mask, enable_gqa=self.n_kv != self.n_heads)
            h = h + a.o_proj(o.transpose(1, 2).reshape(B, T, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        h = m.norm(h[:, -1])
        return self.model.lm_head(h)


class ReferenceEngine(EngineLoop):
    """``reuse_bytes``: keep finished requests' KV blocks (``block_tokens`` each) for prefix reuse, up to that
    many bytes; 0 turns reuse off. ``tokenizer_info``: the xgrammar tokenizer info JSON (``guided``), which turns
    guided decoding on, as ``guided_decoding_backend: xgrammar`` with ``xgrammar_tokenizer_info_path`` does for
    TensorRT-LLM; None leaves it off, and a guided request is refused.

    A guided request's grammar is compiled when it is submitted, on the submitting thread (Triton's for the engine
    model), never on the loop's, so a large schema does not stall the other requests' steps; a compiled grammar is
    kept for the next request with the same guide (``GrammarCache``). At admission the request gets its matcher; every
    step masks its logits, and a request whose grammar is complete ends there."""

    def __init__(self, model, limits: EngineLimits, name: str = "reference", reuse_bytes: int = 0,
                 block_tokens: int = 32, tokenizer_info: str | Path | None = None):
        limits = EngineLimits(
            max_slots=limits.max_slots,
            max_queue=limits.max_queue,
            max_input_len=limits.max_input_len,
            max_seq_len=limits.max_seq_len,
            vocab_size=model.config.vocab_size,
        )
        self.slots = SlotModel(model, limits.max_slots, limits.max_seq_len)
        s = self.slots
        self.cache = PrefixCache.for_bytes(reuse_bytes, block_tokens, s.k.shape[0], s.n_kv, s.head_dim,
                                           s.k.dtype) if reuse_bytes else None
        self._samplers: dict[str, Sampler] = {}
        self.grammars = GrammarCache.from_file(tokenizer_info, limits.vocab_size) if tokenizer_info else None
        self._guides: dict[str, GuideState] = {}
        super().__init__(limits, name, block_tokens)

    @classmethod
    def from_pretrained(cls, model_dir, limits: EngineLimits, dtype: str = "float32", name: str = "reference",
                        reuse_bytes: int = 0, block_tokens: int = 32, tokenizer_info: str | Path | None = None):
        return cls(load_model(model_dir, dtype), limits, name, reuse_bytes, block_tokens, tokenizer_info)

    def _prepare(self, req: EngineRequest) -> object:
        if req.guide is None:
            return None
        if self.grammars is None:
            raise InvalidRequestError(
                f"guided_decoding_guide_type: guided decoding is off in {self.name}'s config (guided_decoding_backend "
                "and xgrammar_tokenizer_info_path unset); a request cannot turn it on", "guided_decoding_guide_type")
        return self.grammars.get(req.guide)  # the compiled grammar

    def _admit(self, live: Live) -> None:
        sampler = self._samplers[live.key] = Sampler(live.seed)
        guide = None
        if live.prepared is not None:  # the compiled grammar is shared; each sequence has a matcher of its own
            guide = self._guides[live.key] = GuideState(live.prepared, self.limits.vocab_size)
        ids, start = live.req.input_ids, 0
        if self.cache is not None:
            blocks = self.cache.match(ids)
            start = self.cache.load(blocks, self.slots.k[:, live.slot], self.slots.v[:, live.slot])
            live.reused_blocks = len(blocks)
        logits = self.slots.prefill(live.slot, ids, start)
        self._take(live, *sampler.choose(logits, live.req, ids, live.generated, guide))

    def _take(self, live: Live, token: int, log_prob: float | None) -> None:
        """Append a chosen token; for a guided request, the matcher accepts it first. Once the grammar has accepted
        a stop token (its only choice when complete) the request ends: at its end token as any request does, or, where
        that is not the end (an end id of -1, or min_tokens not reached), right there, the stop token left out."""
        guide = self._guides.get(live.key)
        req = live.req
        if guide is not None:
            guide.accept(token)
            if guide.terminated and not (token == req.end_id and len(live.generated) >= req.min_tokens):
                self.end(live, FinishReason.STOP)
                return
        self.append_token(live, token, log_prob)

    def stats(self) -> dict:
        out = super().stats()
        out["runtime_cpu_bytes"] = self.slots.kv_bytes
        if self.cache is not None:
            out |= {"kv_blocks_in_use": self.cache.in_use, "kv_blocks_total": self.cache.max_blocks,
                    "kv_blocks_reused": self.cache.counters["hit_blocks"],
                    "runtime_cpu_bytes": self.slots.kv_bytes + self.cache.nbytes}
        return out

    def _step(self, active: list[Live]) -> None:
        # a request finishing at prefill (max 1 token, eos) has already left
        live_now = [a for a in active if a.generated and a.key in self._active]
        if not live_now:
            return
        slots = [a.slot for a in live_now]
        tokens = [a.generated[-1] for a in live_now]
        positions = [len(a.req.input_ids) + len(a.generated) - 1 for a in live_now]
        logits = self.slots.decode(slots, tokens, positions)
        for row, live in zip(logits, live_now):
            s = self._samplers.get(live.key)
            if s is None:  # cancelled while the step ran
                continue
            g = self._guides.get(live.key)
            self._guard(live, lambda lv: self._take(lv, *s.choose(row, lv.req, lv.req.input_ids + lv.generated,
                                                                  lv.generated, g)))

    def _on_release(self, live: Live) -> None:
        self._samplers.pop(live.key, None)
        self._guides.pop(live.key, None)
        if self.cache is not None and live.generated and not live.failed:  # every position but the last token's has its KV
            ids = live.req.input_ids + live.generated[:-1]
            self.cache.store(ids, self.slots.k[:, live.slot], self.slots.v[:, live.slot])
