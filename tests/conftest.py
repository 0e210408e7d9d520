"""Session fixtures: the tiny offline tokenizer and Ziya-shaped model, built once per test run."""

from __future__ import annotations

import pytest

from ziya_trt.fixtures import tiny


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """Tokenizer + tiny random bf16 LlamaForCausalLM in one directory (a checkpoint's layout)."""
    return tiny.build_checkpoint(tmp_path_factory.mktemp("tiny-ziya"))


@pytest.fixture(scope="session")
def chatml_dir(tmp_path_factory):
    """A tiny ChatML byte-level tokenizer with a chat template (the chat_template path, like the demo model's)."""
    return tiny.build_chatml_tokenizer(tmp_path_factory.mktemp("chatml"))


@pytest.fixture(scope="session")
def tok(tiny_ckpt):
    from ziya_trt.text.tokenizer import load_tokenizer

    return load_tokenizer(tiny_ckpt)


# --- real tritonserver fixtures -----------------------------------------------------------------


def _start(tmp_path_factory, name, **cfg_kw):
    from ziya_trt.serving.config import ServeConfig
    from ziya_trt.serving.repo import render_repo
    from ziya_trt.serving.process.server import TritonServer

    d = tmp_path_factory.mktemp(name)
    cfg = ServeConfig(**({"supervisor": {"exit_timeout_s": 10}} | cfg_kw))
    return TritonServer(render_repo(cfg, d / "repo"), log_file=d / "tritonserver.log", serve_config=cfg).start()


def _server_fixture(name: str, with_model: bool = False, **cfg_kw):
    """A session-scoped fixture running one real tritonserver for the tiny checkpoint."""

    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory, tiny_ckpt):
        extra = {"model_dir": tiny_ckpt} if with_model else {}
        srv = _start(tmp_path_factory, name, tokenizer_dir=tiny_ckpt, **extra, **cfg_kw)
        yield srv
        srv.stop()

    return fixture


# reference engine (the tiny model in float32) behind the text front door ``ziya``
ref_server = _server_fixture("ref-server", with_model=True, engine="reference", max_batch_size=4,
                             max_queue_size=32, max_input_len=256, max_seq_len=512, dtype="float32")
# synthetic engine (prompt ids replayed at 200 tok/s per stream) behind ``ziya``
syn_server = _server_fixture("syn-server", engine="synthetic", max_batch_size=256, max_queue_size=64,
                             max_input_len=1024, max_seq_len=4096, synthetic_tokens_per_s=200.0,
                             synthetic_first_token_s=0.01)
# synthetic at 20 tok/s with 2 slots and a queue of 1: for overload, cancel and chat tests
slow_server = _server_fixture("slow-server", engine="synthetic", max_batch_size=2, max_queue_size=1,
                              max_input_len=256, max_seq_len=2048, synthetic_tokens_per_s=20.0,
                              synthetic_first_token_s=0.01)
# the synthetic engine behind a front door that applies a ChatML tokenizer's own chat template


@pytest.fixture(scope="session")
def chatml_server(tmp_path_factory, chatml_dir):
    srv = _start(tmp_path_factory, "chatml-server", engine="synthetic", tokenizer_dir=chatml_dir,
                 template="chat_template", max_batch_size=8, max_queue_size=8, max_input_len=256, max_seq_len=1024,
                 synthetic_tokens_per_s=500.0)
    yield srv
    srv.stop()


# a repository that uses only tensorrtllm_backend's names: ensemble, tensorrt_llm_bls, tensorrt_llm
stock_server = _server_fixture("stock-server", engine="synthetic", engine_model_name="tensorrt_llm",
                               front_door_names=("ensemble", "tensorrt_llm_bls"), max_batch_size=16,
                               max_queue_size=16, max_input_len=256, max_seq_len=1024, synthetic_tokens_per_s=500.0)
