"""CPU per streamed token by process: /proc reads, finding a local server from its port, and a real bench run."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from perf import process_cpu as pc
from ziya_trt.cli import main


def test_a_busy_child_is_found_under_its_parent_and_its_cpu_counted():
    child = subprocess.Popen([sys.executable, "-c", "import time\nt=time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\ntime.sleep(30)"])
    try:
        w = pc.Watch(child.pid)
        before = w.snapshot()
        time.sleep(1.0)
        after = w.snapshot()
        got = w.result(before, after, tokens=1000)
        (name, r), = got["processes"].items()
        assert r["pids"] == [child.pid] and 0.2 <= r["cpu_s"] <= 0.5
        assert r["us_per_token"] == pytest.approx(1e6 * r["cpu_s"] / 1000)
        assert got["server_us_per_token"] == pytest.approx(r["us_per_token"], abs=0.2) and got["visible"]
    finally:
        child.kill()
        child.wait()


def test_a_process_that_starts_in_the_window_counts_from_zero_and_one_that_ends_is_named():
    before = {"t": 0.0, "self": 1.0, "procs": {1: ("tritonserver", 5.0), 2: ("stub ziya", 2.0)}}
    after = {"t": 2.0, "self": 1.5, "procs": {1: ("tritonserver", 6.0), 3: ("stub ziya", 0.5)}}
    got = pc.Watch(1).result(before, after, tokens=500)
    assert got["processes"]["tritonserver"]["us_per_token"] == 2000
    assert got["processes"]["stub ziya"]["cpu_s"] == 0.5 and got["exited_in_window"] == [2]
    assert got[pc.LOAD_GENERATOR]["us_per_token"] == 1000 and got["processes"]["tritonserver"]["cores"] == 0.5


def test_the_listener_of_a_port_is_this_process():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        port = s.getsockname()[1]
        assert pc.listening_pid(port) == os.getpid()
        root, why = pc.server_root(f"grpc://127.0.0.1:{port}")
        assert root is not None and why is None
    finally:
        s.close()


def test_a_remote_server_is_said_to_be_invisible_not_guessed():
    root, why = pc.server_root("grpc://inference.example.com:8001")
    assert root is None and "another machine" in why
    got = pc.Watch(None, why).result(pc.Watch(None).snapshot(), pc.Watch(None).snapshot(), tokens=10)
    assert not got["visible"] and got["processes"] == {} and got["server_us_per_token"] is None


@pytest.mark.server
def test_bench_reports_cpu_per_token_for_each_process_of_a_local_server(syn_server, tiny_ckpt, tmp_path):
    out = tmp_path / "b"
    assert main(["bench", "--url", f"grpc://{syn_server.grpc_url}", "--tokenizer", str(tiny_ckpt), "--isl", "16",
                 "--osl", "16", "--num-requests", "16", "--concurrency", "4", "--no-plots", "--out", str(out)]) == 0
    cpu = json.loads((out / "results.json").read_text())["points"][0]["cpu"]
    assert cpu["visible"] and cpu["tokens"] == 16 * 16
    # the test server runs tritonserver directly: it, the front door's stub and the engine's are seen
    assert {"tritonserver", "stub ziya"} <= set(cpu["processes"])
    assert any(n.startswith("stub ") and n != "stub ziya" for n in cpu["processes"])
    assert cpu["processes"]["stub ziya"]["us_per_token"] > 0 and cpu["server_us_per_token"] > 0
    assert cpu[pc.LOAD_GENERATOR]["us_per_token"] > 0
