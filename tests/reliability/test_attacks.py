"""What a hostile or careless HTTP/gRPC client can try against a real server: crash it, reach its control and
memory APIs, exhaust its connections, memory or admission, or slip numbers past it."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as tg

from tests.triton_helpers import grpc_stream, http_post
from ziya_trt import errors as E
from ziya_trt.client import ZiyaClient
from ziya_trt.serving.http.checks import ADMIN_GRPC_HEADER, ADMIN_HEADER
from ziya_trt.wire.tensors import ENGINE_INPUTS

pytestmark = pytest.mark.server


def get(srv, path, headers=None):
    req = urllib.request.Request(f"http://{srv.http_url}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post_raw(srv, path, data: bytes, headers=None):
    req = urllib.request.Request(f"http://{srv.http_url}{path}", data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize("path", ["/v2/models/ziya/generate", "/v2/models/ziya/generate_stream",
                                  "/v2/models/synthetic/infer", "/v1/chat/completions"])
def test_deeply_nested_json_is_refused_and_the_server_lives(syn_server, path):
    for body in (b"[" * 110_000 + b"]" * 110_000, b'{"a":' * 150_000 + b"1" + b"}" * 150_000):
        status, text = post_raw(syn_server, path, body)
        assert status == 400 and "nested deeper than 64" in text, (status, text[:200])
    assert syn_server.is_ready() and syn_server.proc.poll() is None
    # with the operator's key the control APIs are reachable, and bounded the same way
    status, text = post_raw(syn_server, "/v2/repository/index", b"[" * 110_000, {ADMIN_HEADER: syn_server.admin_key})
    assert status == 400 and syn_server.proc.poll() is None


def test_control_and_memory_apis_need_the_operators_key_over_http(syn_server):
    key = {ADMIN_HEADER: syn_server.admin_key}
    for method, path in [("POST", "/v2/systemsharedmemory/region/stub/register"), ("GET", "/v2/systemsharedmemory/status"),
                         ("POST", "/v2/logging"), ("GET", "/v2/logging"), ("POST", "/v2/trace/setting"),
                         ("POST", "/v2/repository/index"), ("GET", "/v2/models/ziya/config"),
                         ("GET", "/v2/models/tensorrt_llm/config"), ("GET", "/v2/models/ziya/stats")]:
        status, text = (post_raw(syn_server, path, b"{}") if method == "POST" else get(syn_server, path))
        assert status == 403 and "for the operator" in text, (method, path, status, text)
    status, text = get(syn_server, "/v2/models/ziya/config", key)
    assert status == 200 and "/tmp" not in text and "tokenizer_dir" not in text  # no filesystem paths
    status, _ = post_raw(syn_server, "/v2/logging", json.dumps({"log_verbose_level": 0}).encode(), key)
    assert status == 200
    status, text = get(syn_server, "/v2/models/%2e%2e/%2e%2e/v2/repository/index")
    assert status == 400 and "not a plain path" in text


def test_control_and_memory_apis_need_the_operators_key_over_grpc(syn_server):
    c = tg.InferenceServerClient(syn_server.grpc_url)
    try:
        with pytest.raises(Exception) as ei:
            c.register_system_shared_memory("stub", "/triton_python_backend_shm_region_x", 1024)
        assert "key" in str(ei.value).lower() or "restricted" in str(ei.value).lower() or "permission" in str(ei.value).lower()
        for call in (lambda: c.get_model_config("ziya"), lambda: c.get_log_settings(),
                     lambda: c.get_model_repository_index(), lambda: c.get_system_shared_memory_status()):
            with pytest.raises(Exception):
                call()
        key = {ADMIN_GRPC_HEADER: syn_server.admin_key}
        assert c.get_model_config("ziya", headers=key).config.name == "ziya"
        assert c.is_server_ready() and c.is_model_ready("ziya")  # health, metadata and inference stay open
    finally:
        c.close()


def test_more_than_100_http_streams_at_once_and_health_still_answers(syn_server):
    """The guard's upstream pool has no cap of 100 (aiohttp's default)."""
    results, started = [], threading.Barrier(151, timeout=60)

    def stream(i):
        started.wait()
        status, text = http_post(syn_server.http_url, "/v2/models/ziya/generate_stream",
                                 {"text_input": f"stream {i} alpha bravo", "max_tokens": 60, "stream": True})
        results.append(status == 200 and "error" not in text)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(150)]
    [t.start() for t in threads]
    started.wait()
    time.sleep(0.3)  # all 150 are open and streaming (60 tokens at 200/s: 0.3 s in)
    t0 = time.monotonic()
    assert get(syn_server, "/v2/health/ready")[0] == 200
    assert time.monotonic() - t0 < 2.0
    [t.join(60) for t in threads]
    assert len(results) == 150 and all(results)


@pytest.fixture
def guarded(tmp_path, tiny_ckpt):
    """A server whose guard has small limits: 2 s to send a request, 100 connections, an 8 MiB body budget."""
    from ziya_trt.serving.config import ServeConfig
    from ziya_trt.serving.process.server import TritonServer
    from ziya_trt.serving.repo import render_repo

    cfg = ServeConfig(engine="synthetic", tokenizer_dir=tiny_ckpt, max_batch_size=8, max_queue_size=8,
                      max_input_len=256, max_seq_len=1024, synthetic_tokens_per_s=200.0,
                      http={"header_timeout_s": 2.0, "max_connections": 100, "body_budget_bytes": 8 * 1024 * 1024},
                      supervisor={"exit_timeout_s": 10})
    srv = TritonServer(render_repo(cfg, tmp_path / "repo"), log_file=tmp_path / "log", serve_config=cfg).start()
    yield srv
    srv.stop()


def test_slow_idle_and_excess_connections_are_closed(guarded):
    host, port = guarded.http_url.split(":")
    trickling = [socket.create_connection((host, int(port))) for _ in range(40)]
    idle = [socket.create_connection((host, int(port))) for _ in range(40)]
    excess = [socket.create_connection((host, int(port))) for _ in range(60)]  # 140 > 100
    for s in trickling:
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    closed_excess = sum(_closed(s, 2.0) for s in excess)
    assert closed_excess >= 30  # over the cap: closed at once
    while time.monotonic() - t0 < 6:  # trickling: a header line every 0.5 s, never the whole request
        for s in trickling:
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                pass
        time.sleep(0.5)
    assert all(_closed(s, 1.0) for s in trickling + idle), "slow or idle connections were kept open"
    assert get(guarded, "/v2/health/ready")[0] == 200  # and the server serves
    assert guarded._guard.connections.counters["timed_out_connections"] >= 80
    series = dict(line.rsplit(" ", 1) for line in get(guarded, "/metrics")[1].splitlines()  # where operators look
                  if line.startswith("ziya_http_"))
    assert float(series["ziya_http_timed_out_connections_total"]) >= 80
    assert float(series["ziya_http_refused_connections_total"]) >= 30
    for s in trickling + idle + excess:
        s.close()


def _closed(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_stalled_bodies_hold_neither_memory_nor_the_server(guarded):
    host, port = guarded.http_url.split(":")
    stalled = []
    for _ in range(12):  # 12 x 900 KB arriving, never finished: more than the 8 MiB budget
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /v2/models/ziya/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000000\r\n\r\n" + b" " * 900_000)
        stalled.append(s)
    time.sleep(0.5)
    answers = [s.recv(4096) for s in stalled if s.settimeout(5) is None]
    refused = [a for a in answers if b" 429 " in a.split(b"\r\n")[0]]
    timed_out = [a for a in answers if b" 400 " in a.split(b"\r\n")[0] and b"not received within" in a]
    assert len(refused) >= 2 and len(refused) + len(timed_out) == 12, answers
    assert guarded._guard._body_bytes == 0  # every byte counted is given back
    status, _ = http_post(guarded.http_url, "/v2/models/ziya/generate", {"text_input": "hi", "max_tokens": 2})
    assert status == 200
    for s in stalled:
        s.close()


@pytest.mark.parametrize("body, field", [
    ({"max_tokens": 2**32 + 4}, "max_tokens"), ({"top_k": 2**32 + 1}, "top_k"), ({"max_tokens": 2**31}, "max_tokens"),
    ({"stream": True}, "stream"), ({"temperature": 1e-40}, "temperature"),
    ({"bad_words": [f"w{i}" for i in range(17)]}, "bad_words"),
])
def test_inputs_that_would_wrap_or_break_are_refused_over_http(syn_server, body, field):
    status, text = http_post(syn_server.http_url, "/v2/models/ziya/generate", {"text_input": "hi", "max_tokens": 4} | body)
    assert status == 400 and json.loads(text)["error"].startswith("[ziya:invalid_request] " + field + ":"), text


def test_the_engine_refuses_an_infinite_temperature_and_a_negative_bad_word(syn_server):
    base = {"input_ids": np.array([[25, 26, 27]], dtype=np.int32), "input_lengths": 3, "request_output_len": 4}
    for extra, field in ((dict(temperature=np.array([[np.inf]], dtype=np.float32)), "temperature"),
                         (dict(bad_words_list=np.array([[[-1], [1]]], dtype=np.int32)), "bad_words_list")):
        _, err = grpc_stream(syn_server.grpc_url, "synthetic", base | extra, specs=ENGINE_INPUTS)
        assert err is not None and f"{field}:" in err.message(), err
    assert syn_server.is_ready()


@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_prompt_too_long_reaches_the_client_with_its_numbers(ref_server, proto):
    c = ZiyaClient(f"{proto}://{ref_server.grpc_url if proto == 'grpc' else ref_server.http_url}")
    with pytest.raises(E.PromptTooLongError) as ei:
        c.chat("hello world " * 300, max_new_tokens=8)
    e = ei.value
    assert e.field == "messages" and e.budget == 256 and e.n_tokens > 256 and e.excess == e.n_tokens - 256
    with pytest.raises(E.PromptTooLongError) as ei:
        c.generate("hello world " * 300, max_new_tokens=8)
    assert ei.value.field == "text_input" and ei.value.budget == 256


def test_connect_retries_means_that_many_more_attempts():
    """connect_retries=3: 4 connections in all (it once made 16, a retry loop inside a retry loop)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted = []

    def accept():
        server.settimeout(5)
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)
            conn.close()  # every attempt fails: the connection drops at once

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    c = ZiyaClient(f"http://127.0.0.1:{server.getsockname()[1]}", connect_retries=3, backoff_s=0.01)
    with pytest.raises(E.APIConnectionError):
        c.chat("hi", max_new_tokens=2)
    time.sleep(0.2)
    server.close()
    assert len(accepted) == 4
