"""Session fixtures: the tiny offline tokenizer and Ziya-shaped model, built once per test run."""

from __future__ import annotations

import pytest

from ziya_trt import testing


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """Tokenizer + tiny random bf16 LlamaForCausalLM in one directory (a checkpoint's layout)."""
    return testing.build_checkpoint(tmp_path_factory.mktemp("tiny-ziya"))


@pytest.fixture(scope="session")
def tok(tiny_ckpt):
    from ziya_trt.tokenizer import load_tokenizer

    return load_tokenizer(tiny_ckpt)
