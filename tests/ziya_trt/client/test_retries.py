"""Retries: a server that is restarting (503) is tried again after its Retry-After, with jitter; an overloaded one
(429) is not retried. A small HTTP server plays the guard's answers (no tritonserver)."""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ziya_trt import errors as E
from ziya_trt.client import AsyncZiyaClient, ZiyaClient
from ziya_trt.client._client import MAX_RETRY_AFTER_S, pause

DONE = {"text_output": "ok", "finish_reason": "length", "num_input_tokens": 3, "num_output_tokens": 1}


class Script:
    """A server that answers each POST with the next of ``answers`` (status, Retry-After or None, body), then 200."""

    def __init__(self, answers):
        self.answers, self.arrivals = list(answers), []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                script.arrivals.append(time.monotonic())
                status, retry_after, body = script.answers.pop(0) if script.answers else (200, None, DONE)
                if self.path.endswith("generate_stream") and status == 200:
                    data, ctype = f"data: {json.dumps(body)}\n\n".encode(), "text/event-stream"
                else:
                    data, ctype = json.dumps(body).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def gaps(self):
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


RESTARTING = (503, "1", {"error": "[ziya:shutting_down] the server is restarting; retry later"})
OVERLOADED = (429, "1", {"error": "[ziya:overloaded] ziya: overloaded, the engine's 2 places are taken; retry later"})


def test_a_restarting_server_is_tried_again_after_its_retry_after():
    """backoff_s=0.01 would try again at once; the server asked for 1 s, and gets 1 to 1.25 s."""
    with Script([RESTARTING]) as s:
        r = ZiyaClient(s.url, connect_retries=2, backoff_s=0.01).chat("hi", max_new_tokens=1)
        assert r.text == "ok" and len(s.arrivals) == 2
        assert 1.0 <= s.gaps()[0] < 1.25 + 0.2, s.gaps()


def test_a_stream_is_opened_again_after_the_retry_after():
    with Script([RESTARTING]) as s:
        assert "".join(ZiyaClient(s.url, connect_retries=1, backoff_s=0.01).stream_chat("hi", max_new_tokens=1)) == "ok"
        assert len(s.arrivals) == 2 and s.gaps()[0] >= 1.0


def test_the_async_client_waits_the_retry_after_too():
    async def go(url):
        async with AsyncZiyaClient(url, connect_retries=1, backoff_s=0.01) as c:
            return await c.chat("hi", max_new_tokens=1)

    with Script([RESTARTING]) as s:
        assert asyncio.run(go(s.url)).text == "ok" and len(s.arrivals) == 2 and s.gaps()[0] >= 1.0


def test_retries_run_out_and_the_last_error_is_raised_with_its_retry_after():
    with Script([RESTARTING] * 3) as s:
        with pytest.raises(E.ServerShuttingDownError) as ei:
            ZiyaClient(s.url, connect_retries=1, backoff_s=0.01).chat("hi", max_new_tokens=1)
        assert len(s.arrivals) == 2 and ei.value.retry_after_s == 1.0


def test_an_overloaded_server_is_not_retried():
    """Overload is answered at once (429), and the caller decides: the client does not queue behind it."""
    with Script([OVERLOADED]) as s:
        with pytest.raises(E.ServerOverloadedError) as ei:
            ZiyaClient(s.url, connect_retries=3, backoff_s=0.01).chat("hi", max_new_tokens=1)
        assert len(s.arrivals) == 1 and ei.value.retry_after_s == 1.0


def test_a_retry_after_past_the_limit_is_not_waited_for():
    with Script([(503, str(int(MAX_RETRY_AFTER_S) + 1), RESTARTING[2])]) as s:
        t0 = time.monotonic()
        with pytest.raises(E.ServerShuttingDownError):
            ZiyaClient(s.url, connect_retries=3, backoff_s=0.01).chat("hi", max_new_tokens=1)
        assert len(s.arrivals) == 1 and time.monotonic() - t0 < 5


def test_the_wait_is_the_retry_after_with_jitter_or_the_backoff():
    err = E.ServerShuttingDownError("restarting")
    assert pause(err, 0.3) == 0.3 and pause(err, None) is None  # no Retry-After: the backoff's own delay
    err.retry_after_s = 2.0
    waits = [pause(err, 0.1) for _ in range(50)]
    assert all(2.0 <= w <= 2.5 for w in waits) and len(set(waits)) > 1  # never early; not all at once
    assert pause(err, 4.0) == 4.0 and pause(err, None) is None  # a longer backoff stands; no tries left
    err.retry_after_s = MAX_RETRY_AFTER_S + 1
    assert pause(err, 0.1) is None
