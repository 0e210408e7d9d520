"""Children that end with the process that started them (``spawn.popen``), whichever thread asked for them, and
the shared memory of servers whose launcher is gone. Stand-in processes (``sleep``): no tritonserver here."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.polling import wait_until
from ziya_trt.serving.process.spawn import popen, remove_orphaned_shm, shm_prefix

# a launcher in a process of its own: start a sleeper from a short-lived thread, print its pid, wait to be killed
LAUNCHER = r"""
import signal, sys, threading, time
from ziya_trt.serving.process.spawn import popen

out = []
t = threading.Thread(target=lambda: out.append(popen(["sleep", "600"], signal.SIGKILL)))
t.start()
t.join()
print(out[0].pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_child_outlives_the_thread_that_asked_for_it():
    out = []
    t = threading.Thread(target=lambda: out.append(popen(["sleep", "30"], signal.SIGKILL)))
    t.start()
    t.join()
    try:
        time.sleep(0.5)
        assert out[0].poll() is None, "killed when the thread that asked for it ended"
    finally:
        out[0].kill()
        out[0].wait()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_child_dies_with_its_launcher_however_the_launcher_ends(how):
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdout=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[4])
    child = int(launcher.stdout.readline())
    try:
        assert alive(child)
        launcher.send_signal(how)
        launcher.wait(10)
        assert wait_until(lambda: not alive(child), timeout_s=10), "the child outlived its launcher"
    finally:
        launcher.kill()
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_failed_start_is_the_callers_error():
    with pytest.raises(FileNotFoundError):
        popen(["/nonexistent/tritonserver"], signal.SIGKILL)


def test_shared_memory_of_a_gone_launcher_is_removed_and_a_live_ones_kept(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid names no live process now
    names = {f"ziya{gone.pid}p8001_0a1b": False, f"ziya{gone.pid}p8001_0_0a1b": False,  # one GPU; rank 0 of several
             f"{shm_prefix(8001)}0a1b": True, "ziyaXp8001_0a1b": True, "triton_python_backend_shm": True}
    for name in names:
        (tmp_path / name).write_bytes(b"\0")
    removed = remove_orphaned_shm(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n, kept in names.items() if not kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, kept in names.items() if kept)
