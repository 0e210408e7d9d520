"""The bad-input matrix: every case over gRPC and over HTTP, each answered with a clear error that
names the field (and the limit where there is one); the server stays up and ready after each."""

import json
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as tg

from tests.triton_helpers import http_post
from ziya_trt import errors as E
from ziya_trt.client import ZiyaClient

pytestmark = pytest.mark.server
OK = {"text_input": "hello", "max_tokens": 4}
TEN_MB = "x" * (10 * 1024 * 1024)

# name, fields (None = leave out), expected pattern in the error
CASES = [
    ("empty prompt", {"text_input": ""}, r"text_input: empty prompt"),
    ("whitespace prompt", {"text_input": " \n\t "}, r"text_input: empty prompt"),
    ("prompt over max_input_len", {"text_input": "hello " * 300}, r"over the limit of 256 tokens"),
    ("max_tokens 0", {"max_tokens": 0}, r"max_tokens: 0 is below the minimum 1"),
    ("max_tokens negative", {"max_tokens": -5}, r"max_tokens: -5 is below the minimum 1"),
    ("max_tokens over the engine", {"max_tokens": 600}, r"max_tokens: 600 .* exceeds max_seq_len 512; at most \d+ fit"),
    ("temperature < 0", {"temperature": -0.5}, r"temperature: -0.5 is out of range"),
    ("temperature NaN", {"temperature": float("nan")}, r"temperature: must be a finite number"),
    ("top_p 0", {"top_p": 0.0}, r"top_p: 0.0 is out of range, must be greater than 0.0"),
    ("top_p > 1", {"top_p": 1.5}, r"top_p: 1.5 is out of range, must be at most 1.0"),
    ("top_k < 0", {"top_k": -1}, r"top_k: -1 is below the minimum 0"),
    ("repetition_penalty 0", {"repetition_penalty": 0.0}, r"repetition_penalty: 0.0 is out of range"),
    ("repetition_penalty < 0", {"repetition_penalty": -1.0}, r"repetition_penalty: -1.0 is out of range"),
    ("min_tokens < 0", {"min_tokens": -1}, r"min_tokens: -1 is below the minimum 0"),
    ("NUL character", {"text_input": "abc\x00def"}, r"text_input: contains a NUL character at offset 3"),
    ("10 MB prompt", {"text_input": TEN_MB}, r"text_input: 10485760 bytes, over the limit of 4096 bytes"),
    ("empty stop word", {"stop_words": [""]}, r"stop_words: stop strings must be non-empty"),
    ("huge stop word", {"stop_words": ["s" * 5000]}, r"stop_words: 5000 bytes, over the limit of 4096"),
    ("too many stop words", {"stop_words": [f"w{i}" for i in range(40)]}, r"stop_words: 40 stop strings given, at most 16"),
    ("empty bad word", {"bad_words": [""]}, r"bad_words: bad words must be non-empty"),
    ("end_id outside vocab", {"end_id": 50000}, r"end_id: 50000 is outside the vocabulary of 1000"),
    ("pad_id negative", {"pad_id": -3}, r"pad_id: -3 is outside the vocabulary"),
    ("missing required tensor", {"max_tokens": None}, r"max_tokens"),
]


def grpc_send(srv, fields, dtypes=None, model="ziya"):
    """Send raw tensors; return the error message (or None)."""
    from tests.triton_helpers import grpc_stream
    from ziya_trt.wire.tensors import FRONT_DOOR_INPUTS

    inputs = {k: v for k, v in {**OK, **fields}.items() if v is not None}
    res, err = grpc_stream(srv.grpc_url, model, inputs, specs=FRONT_DOOR_INPUTS) if not dtypes else _typed(srv, inputs, dtypes, model)
    return None if err is None else err.message()


def _typed(srv, inputs, dtypes, model):
    import queue

    c = tg.InferenceServerClient(srv.grpc_url)
    q = queue.Queue()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        ins = []
        for k, (arr, dt) in dtypes.items():
            i = tg.InferInput(k, list(arr.shape), dt)
            i.set_data_from_numpy(arr)
            ins.append(i)
        c.async_stream_infer(model, ins)
        return q.get(timeout=30)
    finally:
        c.stop_stream()
        c.close()


def http_send(srv, fields, path="/v2/models/ziya/generate"):
    body = {k: v for k, v in {**OK, **fields}.items() if v is not None}
    status, text = http_post(srv.http_url, path, body)
    return status, text


def assert_clean(msg):
    assert "Traceback" not in msg and ".py" not in msg and "/work" not in msg and "/tmp" not in msg, msg


def assert_ready(srv):
    assert srv.is_ready()
    with urllib.request.urlopen(f"http://{srv.http_url}/v2/models/ziya/ready", timeout=5) as r:
        assert r.status == 200


@pytest.mark.parametrize("name, fields, pattern", CASES, ids=[c[0] for c in CASES])
def test_case_over_grpc(ref_server, name, fields, pattern):
    msg = grpc_send(ref_server, fields)
    assert msg is not None, f"{name}: accepted"
    assert __import__("re").search(pattern, msg), msg
    assert_clean(msg)
    assert_ready(ref_server)


# Over HTTP, a body over the launcher's 1 MiB limit is refused by its guard in front of tritonserver
# (whose own HTTP server crashes on multi-MB generate bodies); a 512 KB prompt reaches the front door.
HTTP_CASES = [("512 KB prompt", {"text_input": "x" * (512 * 1024)}, r"text_input: 524288 bytes, over the limit")
              if c[0] == "10 MB prompt" else c for c in CASES]


@pytest.mark.parametrize("path", ["/v2/models/ziya/generate", "/v2/models/ziya/generate_stream",
                                  "/v2/models/ziya/infer"])
def test_10mb_body_over_http_is_refused_and_the_server_survives(ref_server, path):
    status, text = http_send(ref_server, {"text_input": TEN_MB}, path)
    assert status == 413
    assert json.loads(text)["error"].startswith("[ziya:invalid_request] request body: 104857")
    assert_ready(ref_server)
    with pytest.raises(E.InvalidRequestError, match="over the limit of 1048576 bytes"):
        ZiyaClient(f"http://{ref_server.http_url}").generate(TEN_MB, max_new_tokens=2)


@pytest.mark.parametrize("name, fields, pattern", HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
def test_case_over_http(ref_server, name, fields, pattern):
    status, text = http_send(ref_server, fields)
    assert status >= 400, f"{name}: accepted ({status})"
    msg = json.loads(text)["error"]
    assert __import__("re").search(pattern, msg), msg
    assert_clean(msg)
    assert_ready(ref_server)


def test_wrong_dtype_and_shape(ref_server):
    text = np.array([[b"hello"]], dtype=np.object_)
    cases = {
        "wrong dtype": {"text_input": (text, "BYTES"), "max_tokens": (np.array([[4.0]], dtype=np.float32), "FP32")},
        "wrong shape": {"text_input": (text, "BYTES"), "max_tokens": (np.array([[4, 5]], dtype=np.int32), "INT32")},
        "seed out of range (negative, INT64)": {"text_input": (text, "BYTES"), "max_tokens": (np.array([[4]], dtype=np.int32), "INT32"),
                                                "seed": (np.array([[-1]], dtype=np.int64), "INT64")},
    }
    fields = {"wrong dtype": "max_tokens", "wrong shape": "max_tokens", "seed out of range (negative, INT64)": "seed"}
    for name, dt in cases.items():
        _, err = _typed(ref_server, {}, dt, "ziya")
        assert err is not None, name
        assert fields[name] in err.message(), (name, err.message())
        assert_ready(ref_server)
    # over HTTP, a JSON value of the wrong type never reaches the model: the guard refuses it and names
    # the field (tritonserver's own parser would refuse it too, with "Unable to parse 'data'" and no field)
    for body, field in (({"max_tokens": "four"}, "max_tokens"), ({"seed": -1}, "seed"), ({"temperature": "hot"}, "temperature"),
                        ({"top_k": 1.5}, "top_k"), ({"stream": "yes"}, "stream")):
        status, text = http_send(ref_server, body)
        assert status == 400 and json.loads(text)["error"].startswith(f"[ziya:invalid_request] {field}:"), text
    assert_ready(ref_server)


def test_invalid_utf8(ref_server):
    _, err = _typed(ref_server, {}, {"text_input": (np.array([[b"ok \xff\xfe bad"]], dtype=np.object_), "BYTES"),
                                     "max_tokens": (np.array([[4]], dtype=np.int32), "INT32")}, "ziya")
    assert "text_input: not valid UTF-8 (bad byte at offset 3)" in err.message()
    # JSON cannot carry invalid UTF-8: the HTTP endpoint refuses the body itself
    req = urllib.request.Request(f"http://{ref_server.http_url}/v2/models/ziya/generate",
                                 data=b'{"text_input": "ok \xff bad", "max_tokens": 4}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code >= 400
    assert_ready(ref_server)


def test_stream_over_plain_infer_and_unknown_model(ref_server):
    c = tg.InferenceServerClient(ref_server.grpc_url)
    i = tg.InferInput("text_input", [1, 1], "BYTES")
    i.set_data_from_numpy(np.array([[b"hi"]], dtype=np.object_))
    m = tg.InferInput("max_tokens", [1, 1], "INT32")
    m.set_data_from_numpy(np.array([[4]], dtype=np.int32))
    s = tg.InferInput("stream", [1, 1], "BOOL")
    s.set_data_from_numpy(np.array([[True]]))
    with pytest.raises(Exception, match="decoupled"):
        c.infer("ziya", [i, m, s])
    status, text = http_post(ref_server.http_url, "/v2/models/ziya/infer", {
        "inputs": [{"name": "text_input", "shape": [1, 1], "datatype": "BYTES", "data": ["hi"]},
                   {"name": "max_tokens", "shape": [1, 1], "datatype": "INT32", "data": [4]},
                   {"name": "stream", "shape": [1, 1], "datatype": "BOOL", "data": [True]}]})
    assert status >= 400 and "decoupled" in text
    status, text = http_post(ref_server.http_url, "/v2/models/nope/generate", OK)
    assert status >= 400 and "nope" in text
    with pytest.raises(E.InvalidRequestError, match="nope"):
        ZiyaClient(f"grpc://{ref_server.grpc_url}", model="nope").chat("hi", max_new_tokens=2)
    assert_ready(ref_server)


@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_malformed_conversation(ref_server, proto):
    """The client owns the prompt format, so a malformed conversation is refused before it is sent."""
    c = ZiyaClient(f"{proto}://{ref_server.grpc_url if proto == 'grpc' else ref_server.http_url}")
    for bad, match in (([{"role": "robot", "content": "x"}], "unknown role"),
                       ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
                       ([{"role": "assistant", "content": "x"}], "end with a user message"),
                       ([{"content": "x"}], "role")):
        with pytest.raises((E.InvalidRequestError, KeyError)) as ei:
            c.chat(bad, max_new_tokens=2)
        assert match in str(ei.value)
    assert_ready(ref_server)
