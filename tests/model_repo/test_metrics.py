"""The metrics a real server exports: latency histograms, counters typed as counters, outcomes by finish
reason and by error kind, from the front door, the engine stand-in and the OpenAI API; the tensorrt_llm backend's
own families from the engine stand-in, reconciled with the requests a test holds."""

import re
import time
import urllib.request

import openai
import pytest

from tests.triton_helpers import grpc_stream, hold_engine, release, scrape
from ziya_trt.client import ZiyaClient
from ziya_trt.serving.request_metrics import REQUEST_METRICS

pytestmark = pytest.mark.server


def value(text: str, name: str, **labels) -> float:
    """The sample of ``name`` whose labels include ``labels`` (0 if there is none)."""
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            return float(m.group(2))
    return 0.0


def settle(read, pred, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while True:
        v = read()
        if pred(v) or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


def test_the_front_door_and_the_engine_export_histograms_and_counters(syn_server):
    before = scrape(syn_server)
    c = ZiyaClient(f"grpc://{syn_server.grpc_url}")
    for i in range(5):
        streamed = i < 2  # two streamed, three whole
        r = c.generate(f"metrics {i}", max_new_tokens=6, stream=streamed)
        if streamed:
            r.until_done()
    _, err = grpc_stream(syn_server.grpc_url, "ziya", {"text_input": "x", "max_tokens": 4, "temperature": -1.0})
    assert err is not None

    def delta(name, **labels):
        return value(scrape(syn_server), name, **labels) - value(before, name, **labels)

    assert settle(lambda: delta("ziya_requests_total", model="ziya", finish_reason="length"), lambda v: v >= 5) == 5
    # a first token is timed for the streamed requests only (a whole response's first token is its last)
    assert delta("ziya_time_to_first_token_seconds_count", model="ziya") == 2
    assert delta("ziya_generation_tokens_total", model="ziya") == 30
    assert settle(lambda: delta("ziya_request_errors_total", model="ziya", kind="invalid"), lambda v: v >= 1) == 1
    assert settle(lambda: delta("ziya_engine_queue_time_seconds_count", model="synthetic"), lambda v: v >= 5) >= 5
    text = scrape(syn_server)
    for m in REQUEST_METRICS:
        assert f"# TYPE {m.name} {m.kind}" in text, m.name
    assert "# TYPE ziya_engine_generated_tokens_total counter" in text
    assert "# TYPE ziya_engine_cancelled_requests_total counter" in text
    assert "# TYPE ziya_frontdoor_inflight_requests gauge" in text
    e2e_sum = value(text, "ziya_e2e_request_latency_seconds_sum", model="ziya")
    assert e2e_sum > 0


def test_the_openai_api_exports_the_same_names_on_the_http_port(syn_server):
    def read():
        with urllib.request.urlopen(f"http://{syn_server.http_url}/metrics", timeout=5) as r:
            return r.read().decode()

    before = value(read(), "ziya_requests_total", api="openai", finish_reason="length")
    oa = openai.OpenAI(base_url=syn_server.openai_url, api_key="unused", max_retries=0)
    oa.chat.completions.create(model="ziya", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    text = read()
    assert value(text, "ziya_requests_total", api="openai", finish_reason="length") == before + 1
    assert "# TYPE ziya_time_to_first_token_seconds histogram" in text


def test_the_engine_exports_the_backends_families_with_the_requests_it_holds(syn_server):
    """Three long streams hold engine slots: nv_trt_llm_request_metrics counts them as the backend would (active,
    scheduled; none waiting or in its context phase; max = max_batch_size 256), the KV family counts the blocks
    their tokens fill (32 a block, 256 sequences of 4096 tokens), and both go back when they are released."""
    from ziya_trt.serving.triton.backend_metrics import FAMILIES, INPUT_LEN, KV_CACHE, REQUEST

    engine = dict(model="synthetic", version="1")

    def req(text, t):
        return value(text, REQUEST.name, request_type=t, **engine)

    def kv(text, t):
        return value(text, KV_CACHE.name, kv_cache_block_type=t, **engine)

    def steady(text):  # one update seen whole: the blocks add up
        return kv(text, "used") + kv(text, "free") == kv(text, "max") > 0

    # what earlier tests' requests left settles first: none in the engine, and the mirror (every 100 ms) has
    # observed each one that ended
    settle(lambda: scrape(syn_server), lambda t: req(t, "active") == 0)
    time.sleep(0.3)
    before = scrape(syn_server)
    ended_before = value(before, f"{INPUT_LEN.name}_count", response_metric_type="total_input_tokens", **engine)
    for f in FAMILIES:
        assert f"# TYPE {f.name} {f.kind}" in before, f.name
    held = hold_engine(syn_server, 3)
    try:
        text = settle(lambda: scrape(syn_server), lambda t: req(t, "active") == 3 and req(t, "context") == 0
                      and steady(t))
        assert [req(text, t) for t in ("active", "max", "scheduled", "context", "waiting")] == [3, 256, 3, 0, 0]
        used = kv(text, "used")
        assert 3 * 7 <= used <= 3 * 53  # 195 prompt tokens and up to 1500 generated each, 32 a block
        assert kv(text, "max") == 256 * 128 and kv(text, "tokens_per") == 32
        assert kv(text, "fraction") == pytest.approx(used / (256 * 128))
    finally:
        release(held)
    text = settle(lambda: scrape(syn_server), lambda t: req(t, "active") == 0 and kv(t, "used") == 0)
    assert req(text, "active") == req(text, "scheduled") == 0 and kv(text, "free") == kv(text, "max")

    def ended():
        return value(scrape(syn_server), f"{INPUT_LEN.name}_count", response_metric_type="total_input_tokens",
                     **engine) - ended_before

    assert settle(ended, lambda v: v >= 3) == 3  # each held request observed once, when it ended
