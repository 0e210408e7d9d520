"""The third adversarial round's findings, each against a real server: a body Python cannot parse slipping past the
guard, integers that wrap, lone surrogates, /health while draining, one large conversation blocking the HTTP port,
overload as 400 on /v2, stop strings at the documented limit, internal addresses in messages, HEAD, trailing bytes."""

import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.reliability.test_attacks import get, post_raw
from tests.triton_helpers import grpc_stream, hold_engine, release

pytestmark = pytest.mark.server

CHAT = "/v1/chat/completions"


def chat_body(**kw) -> bytes:
    body = {"model": "ziya", "max_tokens": 4, "messages": [{"role": "user", "content": "hello"}], **kw}
    return json.dumps(body).encode()


def error_of(text: str) -> dict:
    e = json.loads(text)["error"]
    return e if isinstance(e, dict) else {"message": e}


# 1 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tail", [b',"x":"\xff"}', b"} trailing", b"}\x00", b',"x":"a\\ud800"}'])
def test_a_body_python_cannot_parse_never_reaches_tritonserver(syn_server, tail):
    """An invalid byte (or NaN, or bytes after the value) used to skip the guard's range check, and tritonserver then
    wrapped max_tokens 2^32 + 4 into 4 and answered 200."""
    body = b'{"text_input":"hello world","max_tokens":4294967300' + tail
    status, text = post_raw(syn_server, "/v2/models/ziya/generate", body)
    msg = error_of(text)["message"]
    assert status == 400 and ("request body" in msg or "lone surrogate" in msg), (status, text)
    assert syn_server.is_ready()


# 2, 3 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [("top_k", 2**32 + 1), ("top_k", 2**40), ("top_k", 2**31),
                                          ("min_tokens", 2**32 + 3), ("min_tokens", 2**63), ("max_tokens", 2**32 + 4)])
@pytest.mark.parametrize("stream", [False, True])
def test_openai_integers_past_int32_are_refused_naming_the_field(syn_server, field, value, stream):
    status, text = post_raw(syn_server, CHAT, chat_body(**{field: value, "stream": stream}))
    err = error_of(text)
    assert status == 400 and err["param"] == field and err["message"].startswith(f"[ziya:invalid_request] {field}"), text


# 4 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path, body, field", [
    (CHAT, '{"model":"ziya","messages":[{"role":"user","content":"ab\\ud800cd"}]}', "messages"),
    (CHAT, '{"model":"ziya","stop":"x\\udfff","messages":[{"role":"user","content":"hi"}]}', "stop"),
    (CHAT, '{"model":"zi\\ud800ya","messages":[{"role":"user","content":"hi"}]}', "model"),
    ("/v1/completions", '{"model":"ziya","prompt":"ab\\ud800cd"}', "prompt"),
    ("/v2/models/ziya/generate", '{"text_input":"ab\\ud800cd","max_tokens":4}', "text_input"),
])
def test_a_lone_surrogate_is_a_400_that_names_the_field(syn_server, path, body, field):
    status, text = post_raw(syn_server, path, body.encode())
    err = error_of(text)
    assert status == 400 and f"{field}" in err["message"] and "lone surrogate" in err["message"], text
    if path.startswith("/v1/"):
        assert err["param"] == field


def test_a_lone_surrogate_in_grpc_messages_is_an_invalid_request(syn_server):
    messages = '[{"role": "user", "content": "ab\\ud800cd"}]'
    _, err = grpc_stream(syn_server.grpc_url, "ziya", {"messages": messages, "max_tokens": 4})
    assert err is not None and err.message().startswith("[ziya:invalid_request] messages"), err
    assert "lone surrogate" in err.message()


# 5, 13 ----------------------------------------------------------------------------------------------
def test_health_follows_readiness_while_draining_and_head_answers_as_get(syn_server):
    guard = syn_server._guard
    assert get(syn_server, "/health")[0] == 200
    for path in ("/health", "/v2/health/ready"):
        req = urllib.request.Request(f"http://{syn_server.http_url}{path}", method="HEAD")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, path
    guard.set_unavailable("shutting down")  # what the launcher tells it while it drains
    try:
        status, text = get(syn_server, "/health")
        assert status == 503 and json.loads(text)["status"] == "unavailable"
        assert get(syn_server, "/v2/health/ready")[0] == 503
    finally:
        guard.set_unavailable(None)
    assert get(syn_server, "/health")[0] == 200


# 6 ---------------------------------------------------------------------------------------------------
def stream_gaps(srv, out: list, max_tokens: int = 300) -> None:
    """Stream from /v2 generate_stream and record the gaps between its events."""
    body = json.dumps({"text_input": "<human>:" + "go on " * 40 + "\n<bot>:", "max_tokens": max_tokens,
                       "stream": True}).encode()
    req = urllib.request.Request(f"http://{srv.http_url}/v2/models/ziya/generate_stream", data=body, method="POST")
    last = None
    with urllib.request.urlopen(req, timeout=60) as r:
        for line in r:
            if line.startswith(b"data:"):
                now = time.monotonic()
                if last is not None:
                    out.append(now - last)
                last = now


def test_large_conversations_do_not_block_the_http_port(syn_server):
    """Sixteen ~970 KiB conversations (1,500 turns each) parsed, tokenised and truncated at once: /health and an
    unrelated stream through the same port keep answering (before: /health waited up to 9.8 s, and a stream paused
    7.1 s between tokens)."""
    turn = "这是一段很长的对话内容。" * 12 + " some English words in between " * 6
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": turn} for i in range(1499)]
    body = json.dumps({"model": "ziya", "max_tokens": 4, "messages": msgs}, ensure_ascii=False).encode()
    assert 900 * 1024 < len(body) < 1024 * 1024
    gaps: list = []
    streamer = threading.Thread(target=stream_gaps, args=(syn_server, gaps))
    streamer.start()
    time.sleep(0.2)  # the stream is going
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(post_raw(syn_server, CHAT, body)[0]))
               for _ in range(16)]
    for t in threads:
        t.start()
    health = []
    while any(t.is_alive() for t in threads):
        t0 = time.monotonic()
        assert get(syn_server, "/health")[0] == 200
        health.append(time.monotonic() - t0)
        time.sleep(0.02)
    for t in threads + [streamer]:
        t.join()
    assert results == [200] * 16, results
    print(f"while 16 large conversations were served: /health {len(health)} probes, max {max(health) * 1000:.0f} ms; "
          f"an unrelated stream's largest gap between tokens {max(gaps) * 1000:.0f} ms over {len(gaps)} gaps")
    # a loose bound (this test's own 16 senders share the 2 cores): a blocked loop showed 9.8 s and 7.1 s
    assert max(health) < 2.0 and max(gaps) < 2.0


# 8 ---------------------------------------------------------------------------------------------------
def test_overload_is_429_with_retry_after_on_v2_generate(slow_server):
    holders = hold_engine(slow_server, 3)  # 2 slots + a queue of 1, held by clients of the engine itself
    try:
        deadline, seen = time.monotonic() + 20, []
        while time.monotonic() < deadline:
            req = urllib.request.Request(f"http://{slow_server.http_url}/v2/models/ziya/generate", method="POST",
                                         data=b'{"text_input":"<human>:hi\\n<bot>:","max_tokens":2}')
            try:
                urllib.request.urlopen(req, timeout=30).read()
                time.sleep(0.05)
                continue
            except urllib.error.HTTPError as e:
                seen.append((e.code, e.headers.get("Retry-After"), e.read().decode()))
                break
        assert seen and seen[0][0] == 429 and seen[0][1] == "1", seen
        assert "[ziya:overloaded]" in seen[0][2]
    finally:
        release(holders)


# 9 ---------------------------------------------------------------------------------------------------
def test_the_documented_stop_limit_is_the_one_enforced(syn_server):
    """16 stop strings of 256 characters each (the documented limit), every character four UTF-8 bytes: accepted."""
    stops = ["😀" * 255 + chr(0x1F600 + i) for i in range(16)]
    status, text = post_raw(syn_server, CHAT, chat_body(stop=stops))
    assert status == 200, text
    status, text = post_raw(syn_server, CHAT, chat_body(stop=stops + ["one more"]))
    assert status == 400 and error_of(text)["param"] == "stop", text


# 10 --------------------------------------------------------------------------------------------------
def test_an_engine_call_that_fails_does_not_name_the_internal_address():
    import socket

    from ziya_trt.serving.engine_link import EngineLink
    from ziya_trt.wire.arrays import engine_inputs
    from ziya_trt.engine.request import EngineRequest

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    link = EngineLink(f"127.0.0.1:{port}", "synthetic")
    got = threading.Event()
    events = []
    link.submit("r", engine_inputs(EngineRequest([1, 5], 2)), lambda o, e, f: (events.append(e), got.set()))
    try:
        assert got.wait(30)
    finally:
        link.close()
    assert events[0] and str(port) not in events[0] and "127.0.0.1" not in events[0], events


# 13 --------------------------------------------------------------------------------------------------
def test_infer_with_the_binary_extension_still_passes(syn_server):
    """The guard reads only the JSON head of a binary-extension /v2 infer body (Inference-Header-Content-Length)."""
    ids = np.array([[1, 5, 6]], dtype=np.int32)
    head = {"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT32",
                        "parameters": {"binary_data_size": ids.nbytes}},
                       {"name": "input_lengths", "shape": [1, 1], "datatype": "INT32", "data": [3]},
                       {"name": "request_output_len", "shape": [1, 1], "datatype": "INT32", "data": [2]}],
            "outputs": [{"name": "output_ids"}, {"name": "sequence_length"}]}
    h = json.dumps(head).encode()
    status, text = post_raw(syn_server, "/v2/models/synthetic/infer", h + ids.tobytes(),
                            {"Inference-Header-Content-Length": str(len(h)),
                             "Content-Type": "application/octet-stream"})
    # through the guard: tritonserver itself answers (its HTTP infer does not serve decoupled models)
    assert status == 501 and "decoupled" in text, (status, text)
    status, text = post_raw(syn_server, "/v2/models/synthetic/infer", h[:-1] + ids.tobytes(),
                            {"Inference-Header-Content-Length": str(len(h) - 1),
                             "Content-Type": "application/octet-stream"})
    assert status == 400 and "request body" in text  # a JSON head cut short is refused by the guard
