"""The supervisor's thread on a stand-in server whose tritonserver exits at once (a real one and a killed stub:
tests/reliability/test_recovery.py; what it reads of a live server: test_launch.py)."""

import subprocess
import sys

import pytest

from tests.polling import wait_until
from ziya_trt.serving.process import supervisor
from ziya_trt.serving.process.supervisor import Supervisor


def exits(code: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])


class StandIn:
    """What the supervisor asks of its server; tritonserver is a process that exits with ``code`` at once."""

    def __init__(self, code: int):
        self.code, self.proc, self.exit_timeout_s = code, exits(code), 1
        self._stubs, self.restarted, self.unavailable, self.killed = {}, [], None, 0

    def _live_stubs(self):
        return {}

    def _triton_ok(self, what):
        return True

    def restart(self, why):
        self.restarted.append(why)
        self.proc = exits(self.code)

    def _set_unavailable(self, why):
        self.unavailable = why

    def _kill(self):
        self.killed += 1


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(supervisor, "WATCH_EVERY_S", 0.02)


def test_a_crash_is_restarted_within_the_limit_then_the_supervisor_gives_up():
    srv = StandIn(code=1)
    sup = Supervisor(srv, restart_limit=2)
    sup.start()
    try:
        assert wait_until(lambda: sup.gave_up, timeout_s=10)
    finally:
        sup.stop()
    assert srv.restarted == ["tritonserver exited with code 1"] * 2 and len(sup.restarts) == 3
    assert srv.unavailable == "down" and srv.killed == 1


def test_an_exit_with_code_0_is_a_stop_not_a_crash():
    srv = StandIn(code=0)
    sup = Supervisor(srv, restart_limit=3)
    sup.start()
    try:
        assert wait_until(lambda: sup.gave_up, timeout_s=10)
    finally:
        sup.stop()
    assert srv.restarted == [] and srv.unavailable is None and srv.killed == 0
