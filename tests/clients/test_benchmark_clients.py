"""guidellm and AIPerf, unchanged, against the OpenAI-compatible API: the fields they send (vLLM's ``ignore_eos``,
``stream_options.continuous_usage_stats`` from AIPerf's ``--per-chunk-usage``) are taken, every request succeeds,
and the token counts they read from the server's usage are the ones asked for.

Each runs from an environment of its own (``tool_venv``), installed from the package registry on first use (a
minute or two; cached after). The server is the synthetic engine behind a ChatML tokenizer that both tools load
from its folder."""

import json
import os
import subprocess

import pytest

from tests.clients.tool_venv import tool_venv

pytestmark = pytest.mark.server

REQUESTS, ISL, OSL = 8, 48, 16


def run(cmd: list, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    p = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"{cmd[0]} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p


def test_guidellm_runs_unchanged(chatml_server, chatml_dir, tmp_path):
    out = tmp_path / "guidellm.json"
    run([tool_venv("guidellm") / "guidellm", "run",
         "--backend", f"kind=openai_http,target=http://{chatml_server.http_url},model=ziya",
         "--profile", "kind=concurrent,streams=2", "--constraint", f"kind=max_requests,count={REQUESTS}",
         "--data", f"kind=synthetic_text,prompt_tokens={ISL},output_tokens={OSL}",
         "--tokenizer", f"kind=huggingface_auto,model={chatml_dir}",
         "--output", f"kind=json,path={out}", "--disable-progress"], tmp_path)
    bench = json.loads(out.read_text())["benchmarks"][0]
    assert bench["metrics"]["request_totals"] == {"successful": REQUESTS, "errored": 0, "incomplete": 0,
                                                  "total": REQUESTS}
    counts = bench["metrics"]["output_token_count"]["successful"]
    assert counts["min"] == counts["max"] == OSL  # ignore_eos and max_tokens honoured, counted from usage


def test_aiperf_with_per_chunk_usage_runs_unchanged(chatml_server, chatml_dir, tmp_path):
    art = tmp_path / "aiperf"
    run([tool_venv("aiperf") / "aiperf", "profile", "--model", "ziya", "--url", f"http://{chatml_server.http_url}",
         "--endpoint-type", "chat", "--streaming", "--per-chunk-usage", "--use-server-token-count",
         "--tokenizer", chatml_dir, "--concurrency", "2", "--request-count", REQUESTS,
         "--synthetic-input-tokens-mean", ISL, "--output-tokens-mean", OSL, "--extra-inputs", "ignore_eos:true",
         "--artifact-dir", art, "--ui-type", "none"], tmp_path)
    res = json.loads((art / "profile_export_aiperf.json").read_text())
    assert res["error_summary"] == [] and res["is_complete"] and not res["was_cancelled"]
    assert res["request_count"]["avg"] == REQUESTS
    osl = res["output_sequence_length"]
    assert osl["min"] == osl["max"] == OSL and osl["count"] == REQUESTS
