"""Prompt formatting with truncation, and request encoding/decoding (client fields -> tensors, engine
tensors -> EngineRequest -> response arrays). Run: bash scripts/test.sh perf/micro --benchmark-enable"""

import numpy as np
import pytest

from ziya_trt.client._core import Core, as_array
from ziya_trt.engine.request import EngineOutput
from ziya_trt.text.prompt import assistant, build_prompt, get_template, user
from ziya_trt.wire.arrays import engine_inputs, engine_output_arrays, engine_request_from_inputs
from ziya_trt.wire.tensors import ENGINE_INPUTS

HISTORY = [m for i in range(20) for m in (user(f"第{i}个问题：北京在哪里？ where is it?"), assistant("在中国北方。" * 5))]


@pytest.mark.parametrize("budget", [None, 128])
def test_prompt_formatting(benchmark, bench_tok, budget):
    tmpl = get_template("ziya")
    p = benchmark(build_prompt, HISTORY + [user("最后一个问题")], tmpl, bench_tok.count, budget)
    assert p.text.endswith("<human>:最后一个问题\n<bot>:")
    assert budget is None or p.n_tokens <= budget


def test_client_request_encoding(benchmark, bench_tok):
    core = Core("token", "tensorrt_llm", bench_tok)

    def encode():
        req = core.prepare("你好，请介绍一下北京。", max_new_tokens=64)
        return {k: as_array(k, v, req.specs) for k, v in req.fields.items()}

    arrays = benchmark(encode)
    assert arrays["input_ids"].dtype == np.int32 and arrays["request_output_len"][0, 0] == 64


def test_engine_request_decoding_and_response_encoding(benchmark, bench_tok):
    core = Core("token", "tensorrt_llm", bench_tok)
    req = core.prepare("hello world " * 20, max_new_tokens=64)
    inputs = {k: as_array(k, v, ENGINE_INPUTS) for k, v in req.fields.items()}

    def roundtrip():
        r, _ = engine_request_from_inputs(inputs, "id-1")
        out = engine_output_arrays(EngineOutput([5, 6, 7], num_input_tokens=len(r.input_ids), num_output_tokens=3))
        return r, out, engine_inputs(r)

    r, out, back = benchmark(roundtrip)
    assert r.max_new_tokens == 64 and out["output_ids"].tolist() == [[[5, 6, 7]]]
    assert back["input_ids"].tolist() == inputs["input_ids"].tolist()


def test_openai_stream_chunk(benchmark):
    """One streamed token's server-sent event, serialised whole (``http/openai/chunks.py``): the per-token cost of the
    OpenAI API's encoding."""
    from ziya_trt.serving.http.openai.chunks import Chunks

    chunks = Chunks(True, "ziya", usage=False)
    event = benchmark(chunks.text, "北京 is")
    assert event.startswith(b"data: {") and event.endswith(b"}\n\n") and "北京 is".encode() in event
