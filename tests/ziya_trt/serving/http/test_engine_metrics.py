"""The engine's families forwarded to the HTTP port's /metrics: which are kept, and a metrics port that does not
answer (the scrape still succeeds, and says so)."""

import asyncio
import socket

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ziya_trt.serving.http.engine_metrics import UP, engine_exposition, exposition, forwarded

TRITON = """# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="ziya",version="1"} 7
# HELP nv_trt_llm_request_metrics TRT LLM request metrics
# TYPE nv_trt_llm_request_metrics gauge
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 3
nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 8
# HELP ziya_engine_generated_tokens_total tokens generated
# TYPE ziya_engine_generated_tokens_total counter
ziya_engine_generated_tokens_total{model="synthetic"} 42
# HELP ziya_engine_kv_cache_blocks_in_use KV cache blocks
# TYPE ziya_engine_kv_cache_blocks_in_use gauge
ziya_engine_kv_cache_blocks_in_use{model="reference"} 5
"""


def samples(body: bytes) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def test_only_the_engines_families_are_forwarded_and_round_trip():
    got = samples(exposition(forwarded(TRITON), up=True))
    assert got == {
        ("nv_trt_llm_request_metrics", (("model", "tensorrt_llm"), ("request_type", "active"), ("version", "1"))): 3,
        ("nv_trt_llm_request_metrics", (("model", "tensorrt_llm"), ("request_type", "max"), ("version", "1"))): 8,
        ("ziya_engine_generated_tokens_total", (("model", "synthetic"),)): 42,
        ("ziya_engine_kv_cache_blocks_in_use", (("model", "reference"),)): 5,
        (UP, ()): 1.0,
    }


def test_a_metrics_port_that_does_not_answer_leaves_them_out_and_says_so():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def go():
        async with aiohttp.ClientSession() as session:
            return await engine_exposition(session, f"http://127.0.0.1:{port}/metrics")

    assert samples(asyncio.run(go())) == {(UP, ()): 0.0}
    assert samples(exposition([], up=False)) == {(UP, ()): 0.0}
