"""The client against real tritonservers: every public call, both protocols, sync and async."""

import asyncio
import threading
import time

import pytest

from tests.triton_helpers import metric, scrape, wait_metric
from ziya_trt import errors as E
from ziya_trt.client import AsyncZiyaClient, ZiyaClient
from ziya_trt.client._core import map_error
from ziya_trt.finish import FinishReason
from ziya_trt.serving.process.endpoints import free_port
from ziya_trt.serving.triton.gauges import METRIC_ACTIVE, METRIC_CANCELLED

pytestmark = pytest.mark.server
PROTOCOLS = ["grpc", "http"]
GREEDY = dict(max_new_tokens=16, do_sample=False)


def url(srv, proto):
    return f"{proto}://{srv.grpc_url if proto == 'grpc' else srv.http_url}"


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_every_sync_call(ref_server, tok, proto):
    c = ZiyaClient(url(ref_server, proto))
    assert c.is_ready()
    r = c.chat("你好", **GREEDY)
    assert r.text and r.finish_reason in (FinishReason.LENGTH, FinishReason.EOS, FinishReason.STOP)
    assert r.prompt_tokens == len(tok.encode("<human>:你好\n<bot>:")) and 0 < r.completion_tokens <= 16
    assert 0 < r.ttft_s <= r.total_s
    with c.stream_chat("你好", **GREEDY) as s:
        parts = list(s)
    assert "".join(parts) == r.text == s.result.text and len(parts) > 1
    assert c.generate("<human>:你好\n<bot>:", **GREEDY).text == r.text
    assert "".join(c.generate("<human>:你好\n<bot>:", stream=True, **GREEDY)) == r.text
    history = [("first question", "first answer")]
    r2 = c.chat("second", history=history, **GREEDY)
    assert r2.prompt_tokens == len(tok.encode("<human>:first question\n<bot>:first answer\n<human>:second\n<bot>:"))


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_every_async_call(ref_server, proto):
    sync_text = ZiyaClient(url(ref_server, proto)).chat("hello", **GREEDY).text

    async def go():
        async with AsyncZiyaClient(url(ref_server, proto)) as c:
            r = await c.chat("hello", **GREEDY)
            parts = []
            async with c.stream_chat("hello", **GREEDY) as s:
                async for p in s:
                    parts.append(p)
            g = await c.generate("<human>:hello\n<bot>:", **GREEDY)
            many = await asyncio.gather(*[c.chat("hello", **GREEDY) for _ in range(4)])
            return r, "".join(parts), s.result, g, many

    r, streamed, sres, g, many = asyncio.run(go())
    assert r.text == streamed == sres.text == g.text == sync_text
    assert all(m.text == sync_text for m in many)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_token_mode_equals_text_mode(ref_server, tok, proto):
    text = ZiyaClient(url(ref_server, proto)).chat("北京在哪里？", max_new_tokens=24, do_sample=False, seed=3)
    token = ZiyaClient(url(ref_server, proto), mode="token", model="reference", tokenizer=tok).chat(
        "北京在哪里？", max_new_tokens=24, do_sample=False, seed=3
    )
    assert token.text == text.text and token.prompt_tokens == text.prompt_tokens


def test_seeded_sampling_repeats(ref_server):
    c = ZiyaClient(url(ref_server, "grpc"))
    a = c.chat("hello", max_new_tokens=16, seed=1234, temperature=1.0, top_p=0.95)
    b = c.chat("hello", max_new_tokens=16, seed=1234, temperature=1.0, top_p=0.95)
    assert a.text == b.text


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_cancelling_10_streams_frees_every_slot(slow_server, proto):
    """Cancel 10 streams mid-way (2 at a time: the engine has 2 slots); the engine ends with none active."""
    c = ZiyaClient(url(slow_server, proto))
    before = metric(scrape(slow_server), METRIC_CANCELLED, "synthetic") or 0.0
    release = []
    for i in range(5):
        # raw prompts: the synthetic engine echoes the prompt, and "<human>:" would stop it at once
        streams = [c.generate("hello world " * 5, stream=True, max_new_tokens=1000) for _ in range(2)]
        its = [iter(s) for s in streams]
        for it in its:
            next(it)  # generation is under way
        v, _ = wait_metric(slow_server, METRIC_ACTIVE, "synthetic", lambda v: v == 2)
        for s in streams:
            s.cancel()
            assert s.result.finish_reason is FinishReason.CANCELLED
        v, waited = wait_metric(slow_server, METRIC_ACTIVE, "synthetic", lambda v: v == 0)
        assert v == 0, "a cancelled request kept its engine slot"
        release.append(waited)
    after, _ = wait_metric(slow_server, METRIC_CANCELLED, "synthetic", lambda v: v >= before + 10)
    assert after >= before + 10
    print(f"\nslot release after cancel ({proto}): max {max(release) * 1000:.0f} ms")


def test_closing_the_client_cancels_its_open_streams(slow_server):
    c = ZiyaClient(url(slow_server, "grpc"))
    streams = [c.generate("close me", stream=True, max_new_tokens=1000) for _ in range(2)]
    its = [iter(s) for s in streams]
    for it in its:
        next(it)
    v, _ = wait_metric(slow_server, METRIC_ACTIVE, "synthetic", lambda v: v == 2)
    assert v == 2
    c.close()
    assert all(s.result.finish_reason is FinishReason.CANCELLED for s in streams)
    v, _ = wait_metric(slow_server, METRIC_ACTIVE, "synthetic", lambda v: v == 0)
    assert v == 0


def test_leaving_a_stream_early_cancels_it(slow_server):
    c = ZiyaClient(url(slow_server, "grpc"))
    with c.generate("abc def", stream=True, max_new_tokens=1000) as s:
        for _ in s:
            break
    v, _ = wait_metric(slow_server, METRIC_ACTIVE, "synthetic", lambda v: v == 0)
    assert v == 0


# --- typed errors from real conditions ---------------------------------------------------------


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_server_down_is_a_connection_error(proto):
    c = ZiyaClient(f"{proto}://127.0.0.1:{free_port()}", connect_retries=2, backoff_s=0.01)
    t0 = time.monotonic()
    with pytest.raises(E.APIConnectionError) as ei:
        c.chat("hi")
    assert time.monotonic() - t0 < 10 and not isinstance(ei.value, E.APITimeoutError)
    assert ei.value.__cause__ is not None
    assert not c.is_ready()


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_timeout_is_a_timeout_error(slow_server, proto):
    """The engine makes a token every 50 ms; a client that waits at most 20 ms for each times out."""
    c = ZiyaClient(url(slow_server, proto), timeout_s=0.02)
    with pytest.raises(E.APITimeoutError):
        c.generate("hello", stream=True, max_new_tokens=50).until_done()
    v, _ = wait_metric(slow_server, METRIC_ACTIVE, "synthetic", lambda v: v == 0)
    assert v == 0  # the timed-out request was cancelled on the server too


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_invalid_temperature(ref_server, proto):
    c = ZiyaClient(url(ref_server, proto))
    with pytest.raises(E.InvalidRequestError, match="temperature"):
        c.chat("hi", temperature=-1.0)  # refused before sending
    req = c.core.prepare("hi", stream=True)
    req.fields["temperature"] = -1.0  # the same request sent anyway: the server refuses it in-band
    from ziya_trt.client._client import ChatStream

    with pytest.raises(E.InvalidRequestError, match="temperature: -1.0 is out of range") as ei:
        ChatStream(c.core, req, c._open(req)).until_done()
    assert "Traceback" not in str(ei.value)
    if proto == "grpc":  # over gRPC the tritonclient exception is kept as the cause
        assert ei.value.__cause__ is not None


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_prompt_longer_than_max_input_len(ref_server, proto):
    c = ZiyaClient(url(ref_server, proto))
    with pytest.raises(E.InvalidRequestError, match=r"tokens, \d+ over the limit of 256"):
        c.chat("hello world " * 300, max_new_tokens=8)


@pytest.mark.parametrize("proto", PROTOCOLS)
def test_queue_full_is_overloaded(slow_server, proto):
    """2 slots + 1 queued: of 6 concurrent streams at least 3 are refused at once."""
    c = ZiyaClient(url(slow_server, proto))
    outcomes = []

    def one():
        t0 = time.monotonic()
        try:
            c.generate("hi there", max_new_tokens=20)
            outcomes.append(("ok", time.monotonic() - t0))
        except E.ServerOverloadedError:
            outcomes.append(("overloaded", time.monotonic() - t0))

    threads = [threading.Thread(target=one) for _ in range(6)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    refused = [t for k, t in outcomes if k == "overloaded"]
    assert len(outcomes) == 6 and len(refused) >= 3
    assert max(refused) < 1.0  # refused quickly, never a hang
    assert c.generate("hi", max_new_tokens=4).text  # service recovers once the load drops


def test_triton_queue_message_maps_to_overloaded():
    # what Triton itself sends when a model's max_queue_size is exceeded (HTTP 503 / gRPC UNAVAILABLE)
    assert isinstance(map_error("Exceeds maximum queue size", 503), E.ServerOverloadedError)
    assert isinstance(map_error("[ziya:overloaded] engine full"), E.ServerOverloadedError)
    assert isinstance(map_error("[ziya:prompt_too_long] x"), E.InvalidRequestError)


# --- stock tensorrtllm_backend names ---------------------------------------------------------


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
@pytest.mark.parametrize("proto", PROTOCOLS)
def test_works_unchanged_against_stock_model_names(stock_server, tok, model, proto):
    # raw prompts: the synthetic engine echoes the prompt, and "<human>:" would stop it at once
    text = ZiyaClient(url(stock_server, proto), model=model).generate("春天 spring", max_new_tokens=12)
    token = ZiyaClient(url(stock_server, proto), mode="token", model="tensorrt_llm", tokenizer=tok).generate(
        "春天 spring", max_new_tokens=12
    )
    assert text.text == token.text and text.completion_tokens == 12


def test_connect_retries_back_off_with_jitter():
    c = ZiyaClient("grpc://127.0.0.1:1", connect_retries=4, backoff_s=0.1)
    runs = [c._delays() for _ in range(20)]
    for delays in runs:
        assert len(delays) == 4 and all(0.1 * 2**i * 0.5 <= d <= 0.1 * 2**i for i, d in enumerate(delays))
    assert len({tuple(d) for d in runs}) > 1  # not the same schedule for every client
