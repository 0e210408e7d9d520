"""Build an engine stand-in (reference or synthetic) from the ``ServeConfig`` its model was rendered from."""

from __future__ import annotations

from .loop import EngineLoop
from .request import EngineLimits


def build_engine(cfg, name: str, tokenizer_info=None) -> EngineLoop:
    """``cfg`` is a ``serving.config.ServeConfig`` (not imported here: the engines do not depend on serving);
    ``tokenizer_info`` the xgrammar tokenizer info file of a config with guided decoding on (the reference engine's)."""
    kind = cfg.engine.value
    limits = EngineLimits(max_slots=cfg.max_batch_size, max_queue=cfg.max_queue_size,
                          max_input_len=cfg.max_input_len, max_seq_len=cfg.max_seq_len)
    if kind == "reference":
        from .reference import ReferenceEngine

        return ReferenceEngine.from_pretrained(cfg.model_dir, limits, dtype=cfg.dtype, name=name,
                                               reuse_bytes=cfg.kv_reuse_bytes if cfg.kv_cache_reuse else 0,
                                               block_tokens=cfg.kv_block_tokens, tokenizer_info=tokenizer_info)
    if kind == "synthetic":
        from ..text.tokenizer import load_tokenizer
        from .synthetic import SyntheticEngine

        tok = load_tokenizer(cfg.tokenizer_dir, require_chat_tokens=False)
        limits = EngineLimits(limits.max_slots, limits.max_queue, limits.max_input_len, limits.max_seq_len, tok.vocab_size)
        # replay the prompt's content, not its control or turn-marker tokens
        s = tok.special
        skip = frozenset(i for i in (s.bos, s.eos, s.pad, s.human, s.bot) if i is not None)
        return SyntheticEngine(limits, tokens_per_s=cfg.synthetic_tokens_per_s,
                               first_token_s=cfg.synthetic_first_token_s, skip_ids=skip, name=name,
                               schedule=cfg.synthetic_schedule, block_tokens=cfg.kv_block_tokens)
    raise ValueError(f"no engine stand-in for engine kind {kind!r}")
