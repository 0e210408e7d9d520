"""Triton's own refusals, met on a real tritonserver: over a gRPC stream each arrives with no status and no [ziya:]
code, and the client reads it by its row of ``errors.TRITON_MESSAGES``; one test per row."""

import queue
import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as tg

from tests.triton_helpers import hold_engine, release, wait_metric
from ziya_trt import errors as E
from ziya_trt.client import ZiyaClient
from ziya_trt.client._core import map_error
from ziya_trt.serving.triton.gauges import METRIC_ACTIVE, METRIC_QUEUED

pytestmark = pytest.mark.server
ROWS = {name: i for i, name in enumerate(["unknown model", "no available versions", "missing input", "unexpected input",
                                          "data type", "shape", "batch size mismatch", "batch size over max",
                                          "queue full"])}


def row_of(message: str) -> int | None:
    return next((i for i, (pattern, _) in enumerate(E.TRITON_MESSAGES) if pattern.search(message)), None)


def t(name, values, dtype):
    arr = np.array(values, dtype=np.object_ if dtype == "BYTES" else None)
    i = tg.InferInput(name, list(arr.shape), dtype)
    i.set_data_from_numpy(arr.astype({"INT32": np.int32, "FP32": np.float32}.get(dtype, arr.dtype)))
    return i


def stream_error(srv, model, inputs, request_id="r1"):
    """The error of one request on a gRPC stream, as tritonclient hands it to the client's stream callback."""
    c = tg.InferenceServerClient(srv.grpc_url)
    q: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        c.async_stream_infer(model, inputs, request_id=request_id, enable_empty_final_response=True)
        while True:
            result, error = q.get(timeout=30)
            if error is not None or result.get_response().parameters["triton_final_response"].bool_param:
                return error
    finally:
        c.stop_stream(cancel_requests=True)
        c.close()


def assert_row(err, row: str, cls, field=None):
    """A real refusal: no status, the row's form, and the client's typed error for it."""
    assert err is not None and err.status() is None, err
    assert row_of(err.message()) == ROWS[row], err.message()
    typed = map_error(err)
    assert type(typed) is cls and typed.message == err.message()
    assert getattr(typed, "field", None) == field


TEXT = t("text_input", [[b"hello"]], "BYTES")
MAX = t("max_tokens", [[4]], "INT32")


@pytest.mark.parametrize("proto", ["grpc", "http"])
def test_unknown_model(syn_server, proto):
    err = stream_error(syn_server, "nope", [TEXT, MAX])
    assert_row(err, "unknown model", E.InvalidRequestError)
    url = f"grpc://{syn_server.grpc_url}" if proto == "grpc" else f"http://{syn_server.http_url}"
    with pytest.raises(E.InvalidRequestError, match="'nope' is not found"):  # over HTTP by its status, 404
        ZiyaClient(url, model="nope", connect_retries=0).chat("hi", max_new_tokens=2)


def test_missing_required_input(syn_server):
    err = stream_error(syn_server, "synthetic", [t("input_ids", [[5, 6, 7]], "INT32")])
    assert_row(err, "missing input", E.InvalidRequestError)


def test_unexpected_input(syn_server):
    assert_row(stream_error(syn_server, "ziya", [TEXT, MAX, t("bogus", [[1]], "INT32")]), "unexpected input",
               E.InvalidRequestError, "bogus")


def test_wrong_data_type(syn_server):
    assert_row(stream_error(syn_server, "ziya", [TEXT, t("max_tokens", [[4.0]], "FP32")]), "data type",
               E.InvalidRequestError, "max_tokens")


def test_wrong_shape(syn_server):
    assert_row(stream_error(syn_server, "ziya", [TEXT, t("max_tokens", [[4, 5]], "INT32")]), "shape",
               E.InvalidRequestError, "max_tokens")


def test_batch_size_mismatch(syn_server):
    err = stream_error(syn_server, "ziya", [TEXT, t("max_tokens", [[4], [5]], "INT32")])
    assert_row(err, "batch size mismatch", E.InvalidRequestError, err.message().split("'")[1])


def test_batch_size_over_the_models_max(slow_server):
    """slow_server's engine takes batches of at most 2."""
    err = stream_error(slow_server, "synthetic", [t("input_ids", [[5, 6]] * 3, "INT32"),
                                                  t("input_lengths", [[2]] * 3, "INT32"),
                                                  t("request_output_len", [[2]] * 3, "INT32")])
    assert_row(err, "batch size over max", E.InvalidRequestError)


def test_tritons_own_queue_refusal(slow_server):
    """A burst straight at the engine (2 slots, Triton's queue of 1), on streams opened beforehand so the requests
    arrive together: the ones past Triton's queue get its refusal, which the client reads as overloaded."""
    seen = []
    for attempt in range(3):
        errors = _burst(slow_server, 16, attempt)
        assert errors and all(isinstance(map_error(e), E.ServerOverloadedError) for e in errors), \
            [e.message() for e in errors]
        seen += [e for e in errors if row_of(e.message()) == ROWS["queue full"]]
        if seen:
            break
    assert seen, "no request met Triton's own queue bound"
    assert_row(seen[0], "queue full", E.ServerOverloadedError)


def _burst(srv, n: int, attempt: int) -> list:
    clients, results = [], [queue.Queue() for _ in range(n)]
    for q in results:
        c = tg.InferenceServerClient(srv.grpc_url)
        c.start_stream(callback=lambda result, error, q=q: q.put((result, error)))
        clients.append(c)
    inputs = [t("input_ids", [list(range(5, 25))], "INT32"), t("input_lengths", [[20]], "INT32"),
              t("request_output_len", [[40]], "INT32")]
    go = threading.Barrier(n)

    def send(i):
        go.wait(10)
        clients[i].async_stream_infer("synthetic", inputs, request_id=f"burst-{attempt}-{i}")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    [th.start() for th in threads]
    [th.join(10) for th in threads]
    errors = []
    for q in results:
        try:
            _, error = q.get(timeout=5)  # a refusal comes at once; an admitted request's first token within 5 s
        except queue.Empty:
            continue
        if error is not None:
            errors.append(error)
    for c in clients:
        c.stop_stream(cancel_requests=True)
        c.close()
    for metric in (METRIC_ACTIVE, METRIC_QUEUED):
        v, _ = wait_metric(srv, metric, "synthetic", lambda v: v == 0)
        assert v == 0
    return errors


def test_no_available_versions_once_tritonserver_is_stopping(tmp_path, tiny_ckpt):
    """SIGTERM to tritonserver itself: it unloads its models at once, while a held request keeps it running; a new
    request then meets the model with no version ready, which the client reads as the server shutting down."""
    from ziya_trt.serving.config import ServeConfig
    from ziya_trt.serving.limits import SupervisorLimits
    from ziya_trt.serving.process.server import TritonServer
    from ziya_trt.serving.repo import render_repo

    cfg = ServeConfig(engine="synthetic", tokenizer_dir=tiny_ckpt, max_batch_size=4, max_queue_size=4,
                      max_input_len=256, max_seq_len=2048, synthetic_tokens_per_s=20.0)
    srv = TritonServer(render_repo(cfg, tmp_path / "repo"), log_file=tmp_path / "log",
                       supervisor_limits=SupervisorLimits(exit_timeout_s=10), supervise=False).start()
    held = hold_engine(srv, 1)
    try:
        srv.proc.send_signal(signal.SIGTERM)
        client, got, deadline = ZiyaClient(f"grpc://{srv.grpc_url}", connect_retries=0), None, time.monotonic() + 5
        while got is None and time.monotonic() < deadline:
            try:
                client.chat("hi", max_new_tokens=2)
            except E.ServerShuttingDownError as e:
                got = e
            time.sleep(0.05)
        assert got is not None and row_of(got.message) == ROWS["no available versions"], got
        assert_row(stream_error(srv, "ziya", [TEXT, MAX]), "no available versions", E.ServerShuttingDownError)
    finally:
        release(held)
        srv.stop()
