"""The stop sequence's parts on stand-ins: what is in flight (a stand-in metrics endpoint), the drain, the wait
for tritonserver's exit, the final kill (a real tritonserver: tests/reliability/test_shutdown_security.py)."""

import http.server
import subprocess
import threading

import pytest

from ziya_trt.serving.drain import drain_file
from ziya_trt.serving.process import shutdown
from ziya_trt.serving.process.endpoints import free_port

METRICS = """# HELP ziya_frontdoor_inflight_requests requests the front door holds
# TYPE ziya_frontdoor_inflight_requests gauge
ziya_frontdoor_inflight_requests{model="ziya",version="1"} 2
ziya_frontdoor_inflight_requests{model="other",version="1"} 1
# HELP ziya_engine_active_requests requests holding an engine slot
# TYPE ziya_engine_active_requests gauge
ziya_engine_active_requests{model="synthetic",version="1"} 3
# HELP ziya_engine_queued_requests requests waiting for a slot
# TYPE ziya_engine_queued_requests gauge
ziya_engine_queued_requests{model="synthetic",version="1"} 4
# HELP ziya_engine_generated_tokens_total tokens generated
# TYPE ziya_engine_generated_tokens_total counter
ziya_engine_generated_tokens_total{model="synthetic",version="1"} 1000
# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="ziya",version="1"} 77
"""


@pytest.fixture
def metrics_url():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = METRICS.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()


class Extension:
    inflight = 5


def test_in_flight_sums_the_models_gauges_and_the_extensions(metrics_url):
    assert shutdown.in_flight(metrics_url) == 2 + 1 + 3 + 4
    assert shutdown.in_flight(metrics_url, [Extension()]) == 15
    assert shutdown.in_flight(f"http://127.0.0.1:{free_port()}/metrics", [Extension()]) == 5  # nothing to read


def test_drain_refuses_then_waits_for_nothing_in_flight(tmp_path):
    counts, refused = iter([3, 1, 0]), []
    assert shutdown.drain(tmp_path, 5.0, lambda: next(counts), refused.append)
    assert refused == ["shutting down"] and drain_file(tmp_path).exists()
    assert not shutdown.drain(tmp_path, 0.0, lambda: 1, refused.append)  # left past the deadline


def test_the_kill_reaches_the_group_and_removes_the_shared_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(shutdown, "SHM_DIR", tmp_path)
    (tmp_path / "ziya1p2_a").write_text("")
    (tmp_path / "other").write_text("")
    proc = subprocess.Popen(["bash", "-c", "sleep 60 & wait"], start_new_session=True)
    shutdown.kill_group(proc, "ziya1p2_")
    assert proc.poll() is not None and sorted(p.name for p in tmp_path.iterdir()) == ["other"]


def test_tritonserver_gets_its_exit_timeout_unless_drained_stand_ins_unload_at_once():
    assert shutdown.exit_wait_s(drained=True, stand_in=True, exit_timeout_s=30) == 5.0
    assert shutdown.exit_wait_s(drained=False, stand_in=True, exit_timeout_s=30) == 40.0
    assert shutdown.exit_wait_s(drained=True, stand_in=False, exit_timeout_s=30) == 40.0
