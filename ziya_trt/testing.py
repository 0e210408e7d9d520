"""Offline fixtures: a tiny bilingual sentencepiece tokenizer and a tiny Ziya-shaped LLaMA.

Both are built in-process (no network) and are what the tests, the perf microbenchmarks and the
offline demo run on. The tokenizer mimics Ziya2's: BPE with byte fallback, unk 0 / bos 1 / eos 2,
no pad piece, and the added tokens ``<human>`` and ``<bot>``.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

HUMAN_TOKEN = "<human>"
BOT_TOKEN = "<bot>"

_EN = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I serve a large language model with low latency?",
    "TensorRT engines are built ahead of time for one GPU architecture.",
    "Please summarise the following paragraph in two sentences.",
    "Streaming responses let users read while the model is still writing.",
    "What is the capital of France? Paris is the capital of France.",
    "Write a short poem about the sea and the moon.",
    "In-flight batching lets new requests join a running batch.",
    "The key-value cache grows with every generated token.",
    "Thank you! Could you explain that again, step by step?",
]
_ZH = [
    "你好，请问你是谁？",
    "我是一个人工智能助手，很高兴为你服务。",
    "请把下面这段话翻译成英文。",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "大语言模型的推理速度取决于显存带宽。",
    "今天天气很好，我们去公园散步吧。",
    "请写一首关于春天的诗。",
    "这个问题有点复杂，我们一步一步来分析。",
    "机器学习和深度学习有什么区别？",
    "谢谢你的帮助！",
]


def corpus_lines(n: int = 3000, seed: int = 0) -> list[str]:
    """Mixed Chinese/English chat lines, deterministic for a seed."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        parts = [rng.choice(_EN if rng.random() < 0.5 else _ZH) for _ in range(rng.randint(1, 3))]
        line = " ".join(parts)
        if i % 7 == 0:
            line = f"{HUMAN_TOKEN}:{line}\n{BOT_TOKEN}:{rng.choice(_ZH + _EN)}"
        if i % 11 == 0:
            line += f" {rng.randint(0, 10**6)}"
        lines.append(line)
    return lines


def build_tokenizer(out_dir: str | Path, vocab_size: int = 1000, chat_tokens: bool = True) -> Path:
    """Train a tiny Ziya-like sentencepiece BPE model and write a loadable tokenizer directory.

    ``chat_tokens=False`` leaves out ``<human>``/``<bot>`` (for tests of the loader's checks).
    """
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        character_coverage=0.9995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        user_defined_symbols=[HUMAN_TOKEN, BOT_TOKEN] if chat_tokens else [],
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(model.getvalue())
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "add_bos_token": True,
                "add_eos_token": False,
                "legacy": True,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": None,
                "model_max_length": 4096,
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2)
    )
    return out


def ziya_like_config(vocab_size: int, **overrides):
    """A LlamaConfig with Ziya2-13B's keys and ratios but tiny sizes."""
    from transformers import LlamaConfig

    kw = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
        architectures=["LlamaForCausalLM"],
    )
    kw.update(overrides)
    return LlamaConfig(**kw)


def build_model(out_dir: str | Path, vocab_size: int, seed: int = 0, dtype: str = "bfloat16") -> Path:
    """Save a tiny random LlamaForCausalLM shaped like Ziya2 (same config keys, tiny sizes)."""
    import torch
    from transformers import LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(ziya_like_config(vocab_size))
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(out)
    return out


def build_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """Tokenizer and model in one directory, the layout of a real Ziya2 checkpoint."""
    out = build_tokenizer(out_dir)
    import sentencepiece as spm

    n = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).get_piece_size()
    build_model(out, vocab_size=n, seed=seed)
    return out
