"""Small raw-tritonclient helpers for the server tests (the package's own client has its own tests)."""

from __future__ import annotations

import json
import queue
import urllib.error
import urllib.request

import numpy as np
import tritonclient.grpc as tg

from ziya_trt.wire.tensors import ENGINE_INPUTS, FRONT_DOOR_INPUTS


def grpc_inputs(values: dict, specs=FRONT_DOOR_INPUTS):
    out = []
    for name, v in values.items():
        spec = specs[name]
        arr = v if isinstance(v, np.ndarray) else spec.array(v)  # an array as given, even of another dtype
        i = tg.InferInput(name, list(arr.shape), spec.client_dtype)
        i.set_data_from_numpy(arr)
        out.append(i)
    return out


def grpc_stream(url: str, model: str, values: dict, specs=FRONT_DOOR_INPUTS, request_id: str = "", timeout=60):
    """Send one request on a gRPC stream; return (list of result objects, error or None)."""
    c = tg.InferenceServerClient(url)
    q: queue.Queue = queue.Queue()
    c.start_stream(callback=lambda result, error: q.put((result, error)))
    try:
        c.async_stream_infer(model, grpc_inputs(values, specs), request_id=request_id, enable_empty_final_response=True)
        results = []
        while True:
            res, err = q.get(timeout=timeout)
            if err is not None:
                return results, err
            results.append(res)
            if res.get_response().parameters["triton_final_response"].bool_param:
                return results, None
    finally:
        c.stop_stream()
        c.close()


def texts(results) -> str:
    out = []
    for r in results:
        a = r.as_numpy("text_output")
        if a is not None:
            out.extend(x.decode() for x in a.reshape(-1))
    return "".join(out)


def engine_ids(results) -> list[int]:
    out = []
    for r in results:
        a = r.as_numpy("output_ids")
        if a is not None:
            out.extend(a.reshape(-1).tolist())
    return out


def http_post(url: str, path: str, body: dict, timeout=60):
    """(status, text) of a POST to the HTTP endpoint."""
    req = urllib.request.Request(f"http://{url}{path}", data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def metric(metrics_text: str, name: str, model: str) -> float | None:
    for line in metrics_text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def scrape(srv) -> str:
    with urllib.request.urlopen(srv.metrics_url, timeout=5) as r:
        return r.read().decode()


ENGINE = ENGINE_INPUTS


def wait_metric(srv, name: str, model: str, pred, timeout_s: float = 5.0) -> tuple[float | None, float]:
    """Poll /metrics until ``pred(value)``; return (value, seconds waited)."""
    import time

    t0 = time.monotonic()
    v = None
    while time.monotonic() - t0 < timeout_s:
        v = metric(scrape(srv), name, model)
        if v is not None and pred(v):
            break
        time.sleep(0.02)
    return v, time.monotonic() - t0


def hold_engine(srv, n: int, model: str = "synthetic", timeout_s: float = 20.0) -> list:
    """Fill ``n`` of the engine's places (slots, then its queue) with long streams of its own clients, one at a time:
    each counts in the engine's gauges before the next goes (a burst could meet Triton's own queue bound, the
    config's max_queue_size, first). Returns the clients; ``release`` them."""
    import time

    from ziya_trt.serving.triton.gauges import METRIC_ACTIVE, METRIC_QUEUED

    held: list = []
    deadline = time.monotonic() + timeout_s
    while len(held) < n and time.monotonic() < deadline:
        c = tg.InferenceServerClient(srv.grpc_url)
        c.start_stream(callback=lambda result, error: None)
        values = {"input_ids": list(range(5, 200)), "input_lengths": 195, "request_output_len": 1500,
                  "streaming": True}
        c.async_stream_infer(model, grpc_inputs(values, ENGINE_INPUTS), request_id=f"hold-{len(held)}-{time.time_ns()}")
        text = ""
        counted = lambda v: (metric(text, METRIC_ACTIVE, model) or 0) + (metric(text, METRIC_QUEUED, model) or 0)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            text = scrape(srv)
            if counted(text) >= len(held) + 1:
                break
            time.sleep(0.02)
        if counted(text) >= len(held) + 1:
            held.append(c)
        else:  # refused (Triton's queue was full for a moment): try again
            c.stop_stream(cancel_requests=True)
            c.close()
    if len(held) < n:
        release(held)
        raise TimeoutError(f"could hold only {len(held)} of {n} engine places")
    return held


def release(clients) -> None:
    for c in clients:
        c.stop_stream(cancel_requests=True)
        c.close()
