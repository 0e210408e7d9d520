"""Stopping a server of the launcher, on the thread that stops it: the drain (``drain``: new requests refused, the
running ones given the drain timeout, counted by ``in_flight``), how long tritonserver then gets to exit
(``exit_wait_s``), and the kill of whatever is left (``kill_group``)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ..drain import start_drain
from ..triton.gauges import METRIC_ACTIVE, METRIC_FRONT_DOOR_INFLIGHT, METRIC_QUEUED

log = logging.getLogger(__name__)
DRAIN_AFTER_DEADLINE_S = 2.0  # past the drain's deadline, the models end what is left; waited for this long
SHM_DIR = Path("/dev/shm")
_IN_FLIGHT = (METRIC_FRONT_DOOR_INFLIGHT, METRIC_ACTIVE, METRIC_QUEUED)


def in_flight(metrics_url: str, extensions: Iterable = ()) -> int:
    """Requests the front doors and the engine stand-ins hold (their gauges, on tritonserver's metrics port),
    and the guard's extensions (the OpenAI API) themselves; what cannot be read counts as none."""
    n = sum(getattr(e, "inflight", 0) for e in extensions)
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return n
    try:
        for family in text_string_to_metric_families(text):
            if family.name in _IN_FLIGHT:
                n += sum(int(s.value) for s in family.samples if s.name == family.name)
    except ValueError as e:
        log.warning("tritonserver's metrics do not parse (%s); counting what was read", e)
    return n


def drain(repo: Path, timeout_s: float, count: Callable[[], int], refuse: Callable[[str], None]) -> bool:
    """Tell the models to drain (``drain.py``) and the guard to ``refuse`` new requests, then wait for ``count()``
    to reach 0: True once it does, False if requests are left past the deadline (the models end them)."""
    deadline = time.time() + timeout_s
    start_drain(repo, deadline)
    refuse("shutting down")
    while time.time() < deadline + DRAIN_AFTER_DEADLINE_S:
        if count() == 0:
            return True
        time.sleep(0.05)
    return count() == 0


def exit_wait_s(drained: bool, stand_in: bool, exit_timeout_s: int) -> float:
    """How long tritonserver gets after SIGTERM: with nothing in flight the stand-ins unload in seconds; else its
    own exit timeout and 10 s. (tritonserver 2.51 can keep a model loaded until its exit timeout after a client
    cancels a stream it has just finished.)"""
    return 5.0 if drained and stand_in else exit_timeout_s + 10.0


def kill_group(proc: subprocess.Popen, shm_prefix: str) -> None:
    """The whole process group at once (no stub outlives its server), then its shared memory."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    for p in SHM_DIR.glob(f"{shm_prefix}*"):
        p.unlink(missing_ok=True)
