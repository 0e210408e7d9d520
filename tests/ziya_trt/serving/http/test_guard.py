"""The HTTP guard's limits (``HttpLimits``, part of the ServeConfig) and how another thread tells it the server is
unavailable. What the limits do to real connections: tests/reliability/test_attacks.py."""

import threading
import urllib.error
import urllib.request

from tests.polling import wait_until
from ziya_trt.serving.http.guard import HttpGuard, open_files_limit
from ziya_trt.serving.limits import HttpLimits
from ziya_trt.serving.process.endpoints import free_port


def test_the_guard_takes_its_limits_from_http_limits():
    g = HttpGuard("127.0.0.1", 1, 2, HttpLimits(max_body_bytes=5, header_timeout_s=2.0, body_budget_bytes=10))
    assert (g.max_body, g.header_timeout_s, g.body_budget) == (5, 2.0, 10)
    assert g.max_connections == max(64, open_files_limit() - 256)  # None: from the open-files limit
    assert HttpGuard("127.0.0.1", 1, 2, HttpLimits(max_connections=100)).max_connections == 100


def test_unavailable_is_changed_on_the_guards_loop_whoever_asks():
    port = free_port()
    g = HttpGuard("127.0.0.1", port, free_port())
    g.set_unavailable("restarting")  # not started: at once
    assert g.unavailable == "restarting"
    g.set_unavailable(None)
    g.start()
    try:
        seen = []
        g._loop.call_soon_threadsafe(lambda: seen.append(threading.current_thread().name))
        g.set_unavailable("shutting down")  # from this thread: handed to the loop
        assert wait_until(lambda: g.unavailable == "shutting down") and seen == ["http-guard"]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5)
            status = 200
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == 503
    finally:
        g.stop()
    g.set_unavailable(None)  # stopped: at once again
    assert g.unavailable is None
