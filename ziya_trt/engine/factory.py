"""Build an engine stand-in from the string parameters of its rendered ``config.pbtxt``."""

from __future__ import annotations

from .core import EngineLimits, EngineLoop


def build_engine(params: dict[str, str], name: str) -> EngineLoop:
    kind = params["engine_kind"]
    limits = EngineLimits(
        max_slots=int(params["max_batch_size"]),
        max_queue=int(params["max_queue_size"]),
        max_input_len=int(params["max_input_len"]),
        max_seq_len=int(params["max_seq_len"]),
    )
    if kind == "reference":
        from .reference import ReferenceEngine

        return ReferenceEngine.from_pretrained(params["model_dir"], limits, dtype=params.get("dtype", "float32"), name=name)
    if kind == "synthetic":
        from ..tokenizer import load_tokenizer
        from .synthetic import SyntheticEngine

        tok = load_tokenizer(params["tokenizer_dir"], require_chat_tokens=False)
        limits = EngineLimits(limits.max_slots, limits.max_queue, limits.max_input_len, limits.max_seq_len, tok.vocab_size)
        # replay the prompt's content, not its control or turn-marker tokens
        s = tok.special
        skip = frozenset(i for i in (s.bos, s.eos, s.pad, s.human, s.bot) if i is not None)
        return SyntheticEngine(
            limits,
            tokens_per_s=float(params["tokens_per_s"]),
            first_token_s=float(params["first_token_s"]),
            skip_ids=skip,
            name=name,
        )
    raise ValueError(f"unknown engine_kind {kind!r}")
