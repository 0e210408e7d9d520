"""The serving path through a real tritonserver: engines, front door, streaming, Chinese text."""

import random
import threading
import time

import pytest
import torch

from tests.triton_helpers import ENGINE, engine_ids, grpc_stream, http_post, sse_events, texts
from ziya_trt.finish import FinishReason
from ziya_trt.text.detok import TextStream
from ziya_trt.engine.synthetic import synthetic_tokens

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def hf_model(tiny_ckpt):
    from ziya_trt.engine.reference import load_model

    return load_model(tiny_ckpt, "float32")


def _greedy(model, ids, n, **kw):
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, pad_token_id=0, **kw)
    return out[0, len(ids):].tolist()


def test_inflight_batching_greedy_equals_generate(ref_server, hf_model):
    """8 requests of different lengths, sent at staggered times to a 4-slot engine, token for token."""
    rng = random.Random(1)
    cases = []
    for i in range(8):
        ids = [1] + [rng.randrange(5, 1000) for _ in range(rng.randint(2, 60))]
        cases.append((ids, rng.randint(1, 40), bool(i % 2)))
    got = {}

    def run(i, ids, n, streaming):
        time.sleep(0.03 * i)
        values = {"input_ids": __import__("numpy").array([ids], dtype="int32"), "input_lengths": len(ids),
                  "request_output_len": n, "runtime_top_k": 1, "streaming": streaming}
        res, err = grpc_stream(ref_server.grpc_url, "reference", values, specs=ENGINE, request_id=f"ifb-{i}")
        got[i] = err or engine_ids(res)

    threads = [threading.Thread(target=run, args=(i, *c)) for i, c in enumerate(cases)]
    [t.start() for t in threads]
    [t.join(120) for t in threads]
    for i, (ids, n, _) in enumerate(cases):
        expected = _greedy(hf_model, ids, n, min_new_tokens=n)
        assert got[i] == expected, f"request {i}"


def test_front_door_greedy_with_the_cards_repetition_penalty(ref_server, hf_model, tok):
    prompt = "<human>:你好，请问你是谁？\n<bot>:"
    ids = tok.encode(prompt)
    expected_ids = _greedy(hf_model, ids, 30, repetition_penalty=1.05, eos_token_id=2)
    s = TextStream(tok.table, stops=["<human>:"], eos_ids=[2], max_new_tokens=30)
    expected = s.push(expected_ids).text + s.finish(FinishReason.EOS).text
    res, err = grpc_stream(ref_server.grpc_url, "ziya", {"text_input": prompt, "max_tokens": 30, "top_k": 1})
    assert err is None
    assert texts(res) == expected
    final = res[-1]
    assert final.as_numpy("num_input_tokens").item() == len(ids)
    assert final.as_numpy("finish_reason")[0].decode() in {"length", "eos", "stop"}


@pytest.mark.parametrize("server", ["ref_server", "syn_server"])
def test_streaming_equals_non_streaming_over_grpc_and_http(server, request):
    srv = request.getfixturevalue(server)
    # no "<human>:" in it: the synthetic engine echoes the prompt, and that is a stop string
    body = {"text_input": "写一首关于春天的诗 spring 🌸 ꙮ", "max_tokens": 24, "top_k": 1}
    whole, err = grpc_stream(srv.grpc_url, "ziya", body)
    assert err is None and len(whole) == 1
    streamed, err = grpc_stream(srv.grpc_url, "ziya", {**body, "stream": True})
    assert err is None and len(streamed) > 2
    status, text = http_post(srv.http_url, "/v2/models/ziya/generate", body)
    assert status == 200
    http_whole = __import__("json").loads(text)["text_output"]
    status, text = http_post(srv.http_url, "/v2/models/ziya/generate_stream", {**body, "stream": True})
    events = sse_events(text)
    assert status == 200 and len(events) > 2 and "error" not in text
    http_streamed = "".join(e["text_output"] for e in events)
    assert texts(whole) == texts(streamed) == http_whole == http_streamed
    assert events[-1]["finish_reason"] in {"length", "eos", "stop"}


def test_chinese_and_byte_fallback_text_arrive_intact(syn_server, tok):
    """The synthetic engine replays the prompt's own ids, so the exact expected text is known."""
    prompt = "春风拂面 ꙮ𝔘 😀👩‍👩‍👧 ǅ 你好"
    ids = tok.encode(prompt)
    n = 3 * (len(ids) - 1)  # whole cycles of the prompt (bos is skipped), so no character is cut
    expected = tok.decode(synthetic_tokens(ids, n, frozenset({0, 1, 2})))
    assert "ꙮ" in expected and "\ufffd" not in expected
    res, err = grpc_stream(syn_server.grpc_url, "ziya", {"text_input": prompt, "max_tokens": n, "stream": True})
    assert err is None
    pieces = [r.as_numpy("text_output")[0].decode() for r in res]
    assert "".join(pieces) == expected
    assert not any("\ufffd" in p for p in pieces)
    status, text = http_post(syn_server.http_url, "/v2/models/ziya/generate_stream",
                             {"text_input": prompt, "max_tokens": n, "stream": True})
    assert "".join(e["text_output"] for e in sse_events(text)) == expected


def test_stop_string_is_cut_and_engine_stopped(syn_server, tok):
    # the synthetic engine echoes the prompt, so a stop string inside the prompt must end the reply
    prompt = "hello world STOPHERE more text"
    res, err = grpc_stream(syn_server.grpc_url, "ziya",
                           {"text_input": prompt, "max_tokens": 200, "stop_words": ["STOPHERE"], "stream": True})
    assert err is None
    out = texts(res)
    assert out == "hello world " and "STOP" not in out
    assert res[-1].as_numpy("finish_reason")[0].decode() == "stop"
