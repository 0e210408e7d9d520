"""A launcher that dies takes its servers with it: SIGKILL the process that started a real tritonserver (as a
pytest run stopped by a timeout, or ``ziya-trt serve`` killed by the OOM killer, is) and neither tritonserver nor
its Python backend stubs are left holding ports and memory, whether tritonserver was first started by the caller's
thread or restarted by the supervisor's."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ziya_trt.serving.process import procs

pytestmark = pytest.mark.server

# the launcher, in a process of its own: start a synthetic-engine server, optionally have the supervisor restart
# it (a killed stub), print tritonserver's pid and its stubs' pids, then wait to be killed
LAUNCHER = r"""
import os, signal, sys, time
from pathlib import Path
from ziya_trt.serving.config import ServeConfig
from ziya_trt.serving.process.server import TritonServer
from ziya_trt.serving.process.procs import python_stubs
from ziya_trt.serving.repo import render_repo

out, tok, restart = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "restart"
cfg = ServeConfig(engine="synthetic", tokenizer_dir=tok, max_batch_size=2, max_queue_size=2, max_input_len=64,
                  max_seq_len=256, supervisor={"exit_timeout_s": 5})
srv = TritonServer(render_repo(cfg, out / "repo"), log_file=out / "tritonserver.log", serve_config=cfg).start()
if restart:
    first, stubs = srv.proc.pid, len(python_stubs(srv.proc.pid))
    os.kill(next(iter(python_stubs(first))), signal.SIGKILL)
    deadline = time.monotonic() + 120
    while not (srv.proc.pid != first and srv.is_ready() and len(python_stubs(srv.proc.pid)) == stubs):
        assert time.monotonic() < deadline, "not restarted"
        time.sleep(0.2)
print(srv.proc.pid, *python_stubs(srv.proc.pid), flush=True)
time.sleep(600)
"""


def processes_of(repo: Path) -> dict[int, tuple[str, ...]]:
    """Live processes whose command line names this server's repository (tritonserver, its stubs)."""
    return {p.pid: p.argv for p in procs.every().values()
            if any(str(repo) in a for a in p.argv) and not _zombie(p.pid)}


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("started_by", ["caller", "supervisor"])
def test_sigkill_of_the_launcher_ends_tritonserver_and_its_stubs(tmp_path, tiny_ckpt, started_by):
    repo = tmp_path / "repo"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(tmp_path), str(tiny_ckpt),
                                 "restart" if started_by == "supervisor" else "once"],
                                stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        pids = [int(x) for x in launcher.stdout.readline().split()]
        assert len(pids) >= 3, f"the launcher did not come up; log:\n{(tmp_path / 'tritonserver.log').read_text()}"
        assert set(pids) <= set(processes_of(repo))  # found by the repository in their command lines
        t0 = time.monotonic()
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(10)
        while processes_of(repo) and time.monotonic() < t0 + 10:
            time.sleep(0.05)
        left = processes_of(repo)
        assert not left, f"left running after the launcher was killed: {left}"
        print(f"\nlauncher killed ({started_by} started tritonserver): tritonserver and {len(pids) - 1} stubs gone "
              f"{time.monotonic() - t0:.2f}s later")
    finally:
        launcher.kill()
        for pid in processes_of(repo):  # whatever a failure left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
