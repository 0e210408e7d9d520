"""SIGTERM under load drains cleanly; restart and reconnect; security defaults."""

import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.triton_helpers import http_post
from ziya_trt import errors as E
from ziya_trt.client import ZiyaClient
from ziya_trt.serving.config import ServeConfig, SupervisorLimits
from ziya_trt.serving.repo import render_repo
from ziya_trt.serving.process.server import Ports, TritonServer

pytestmark = pytest.mark.server


def start(tmp_path, tiny_ckpt, ports, name):
    cfg = ServeConfig(engine="synthetic", tokenizer_dir=tiny_ckpt, max_batch_size=32, max_queue_size=8,
                      max_input_len=256, max_seq_len=1024, synthetic_tokens_per_s=50.0, drain_timeout_s=5.0)
    return TritonServer(render_repo(cfg, tmp_path / name / "repo"), ports, log_file=tmp_path / name / "log",
                        supervisor_limits=SupervisorLimits(exit_timeout_s=10)).start()


def stubs_of(repo) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(repo)], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "pgrep" not in ln]


def test_sigterm_under_load_drains_then_restart_reconnects(tmp_path, tiny_ckpt):
    ports = Ports.free()
    srv = start(tmp_path, tiny_ckpt, ports, "a")
    url = f"grpc://{srv.grpc_url}"
    outcomes, started = {}, threading.Barrier(13)

    def stream(i):
        c = ZiyaClient(url, connect_retries=0)
        try:
            s = c.generate(f"drain me {i}", stream=True, max_new_tokens=40)
            it = iter(s)
            next(it)
            started.wait(10)
            list(it)
            outcomes[i] = ("completed", s.result.completion_tokens, s.result.finish_reason.value)
        except E.ZiyaError as e:
            outcomes[i] = ("error", type(e).__name__, str(e))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(12)]
    [t.start() for t in threads]
    started.wait(10)  # every stream is generating
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    [t.join(30) for t in threads]
    rc = srv.proc.wait(30)
    took = time.monotonic() - t0
    srv.stop()
    assert len(outcomes) == 12, "a request hung through shutdown"
    completed = [o for o in outcomes.values() if o[0] == "completed"]
    errors = [o for o in outcomes.values() if o[0] == "error"]
    assert all(o[1] == 40 and o[2] == "length" for o in completed), completed
    assert all(o[1] in ("ServerShuttingDownError", "ConnectionError", "ServerError") and o[2] for o in errors)
    # drained and exited cleanly inside the exit timeout (not cut off by it)
    assert took < srv.exit_timeout_s and rc == 0, (took, rc)
    assert not stubs_of(srv.repo), "a python backend stub outlived the server"
    print(f"\nSIGTERM with 12 streams in flight: {len(completed)} completed, {len(errors)} clear errors, "
          f"server exited in {took:.1f}s (exit code {rc})")

    # restart on the same ports while a client is already retrying
    result = {}

    def late_client():
        try:
            result["r"] = ZiyaClient(url, connect_retries=8, backoff_s=0.25).generate("back again", max_new_tokens=5)
        except E.ZiyaError as e:
            result["e"] = e

    t = threading.Thread(target=late_client)
    t.start()
    time.sleep(0.5)
    srv2 = start(tmp_path, tiny_ckpt, ports, "b")
    try:
        t.join(60)
        assert "r" in result and result["r"].completion_tokens == 5, result
    finally:
        srv2.stop()
    assert not stubs_of(srv2.repo)


def test_binds_loopback_and_refuses_model_control(syn_server):
    cmd = syn_server.command()
    assert "--http-address=127.0.0.1" in cmd and "--grpc-address=127.0.0.1" in cmd and "--metrics-address=127.0.0.1" in cmd
    assert "--model-control-mode=none" in cmd
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            if state == "0A":  # LISTEN
                addr, port = local.split(":")
                listening.add((addr, int(port, 16)))
    for port in (syn_server.ports.http, syn_server.ports.grpc, syn_server.ports.metrics):
        addrs = {a for a, p in listening if p == port}
        # 127.0.0.1, as IPv4 or IPv4-mapped IPv6 (::ffff:127.0.0.1)
        assert addrs and addrs <= {"0100007F", "0000000000000000FFFF00000100007F"}, f"port {port} listens on {addrs}"
    status, text = http_post(syn_server.http_url, "/v2/repository/models/ziya/unload", {})
    assert status == 403 and "for the operator" in text  # the repository API needs the operator's key

    from ziya_trt.serving.http.checks import ADMIN_HEADER

    req = urllib.request.Request(f"http://{syn_server.http_url}/v2/repository/models/ziya/unload", data=b"{}",
                                 method="POST", headers={ADMIN_HEADER: syn_server.admin_key})
    with pytest.raises(urllib.error.HTTPError) as ei:  # and even with it, model control stays off
        urllib.request.urlopen(req, timeout=10)
    assert ei.value.code >= 400 and "not allowed" in ei.value.read().decode()
    with urllib.request.urlopen(f"http://{syn_server.http_url}/v2/models/ziya/ready", timeout=5) as r:
        assert r.status == 200
