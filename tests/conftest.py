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


# --- real tritonserver fixtures -----------------------------------------------------------------


def _start(tmp_path_factory, name, **cfg_kw):
    from ziya_trt.serve_config import ServeConfig, render_repo
    from ziya_trt.server import TritonServer

    d = tmp_path_factory.mktemp(name)
    repo = render_repo(ServeConfig(**cfg_kw), d / "repo")
    return TritonServer(repo, log_file=d / "tritonserver.log", exit_timeout_s=10).start()


@pytest.fixture(scope="session")
def ref_server(tmp_path_factory, tiny_ckpt):
    """Reference engine (the tiny model in float32) behind the text front door ``ziya``."""
    srv = _start(
        tmp_path_factory, "ref-server", engine="reference", tokenizer_dir=tiny_ckpt, model_dir=tiny_ckpt,
        max_batch_size=4, max_queue_size=32, max_input_len=256, max_seq_len=512, dtype="float32",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def syn_server(tmp_path_factory, tiny_ckpt):
    """Synthetic engine (prompt ids replayed at 200 tok/s per stream) behind ``ziya``."""
    srv = _start(
        tmp_path_factory, "syn-server", engine="synthetic", tokenizer_dir=tiny_ckpt,
        max_batch_size=256, max_queue_size=64, max_input_len=1024, max_seq_len=4096,
        synthetic_tokens_per_s=200.0, synthetic_first_token_s=0.01,
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def slow_server(tmp_path_factory, tiny_ckpt):
    """Synthetic engine at 20 tok/s with 2 slots and a queue of 1: for overload, cancel and chat tests."""
    srv = _start(
        tmp_path_factory, "slow-server", engine="synthetic", tokenizer_dir=tiny_ckpt,
        max_batch_size=2, max_queue_size=1, max_input_len=256, max_seq_len=2048,
        synthetic_tokens_per_s=20.0, synthetic_first_token_s=0.01,
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def stock_server(tmp_path_factory, tiny_ckpt):
    """A repository that uses only tensorrtllm_backend's names: ensemble, tensorrt_llm_bls, tensorrt_llm."""
    srv = _start(
        tmp_path_factory, "stock-server", engine="synthetic", tokenizer_dir=tiny_ckpt,
        engine_model_name="tensorrt_llm", front_door_names=("ensemble", "tensorrt_llm_bls"),
        max_batch_size=16, max_queue_size=16, max_input_len=256, max_seq_len=1024, synthetic_tokens_per_s=500.0,
    )
    yield srv
    srv.stop()
