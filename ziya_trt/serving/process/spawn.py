"""Server processes that end with the process that started them.

A launcher can die without running any cleanup of its own: SIGKILL, the OOM killer, a test run stopped by its
timeout. Whatever it had started (tritonserver, mpirun, ``ziya-trt serve``) would then live on under PID 1,
holding its ports, its memory and its GPU. So the launcher starts each of them with ``popen`` here:

- Between fork and exec the child asks the kernel for a signal when its parent goes (``PR_SET_PDEATHSIG``,
  kept across the exec), and exits at once if the parent is already gone (it died before the request).
- For the kernel the parent is the *thread* that forked the child, not the process: a tritonserver restarted
  from the supervisor thread would be killed as soon as that thread returned (at ``stop``, before its drain),
  and one started from a short-lived worker thread at once. So every child is forked by one thread of this
  module's that lives as long as the process: a daemon thread blocked on its queue, which nothing ends but the
  process itself.
- Grandchildren are not covered (a fork clears the request): tritonserver's Python backend stubs watch it
  themselves (python_backend ``pb_stub.cc``: ``kill(parent, 0)`` every 300 ms) and exit once it is gone; mpirun
  ends its ranks when it is signalled.

A server killed so has no chance to remove its Python backend's shared-memory regions: ``remove_orphaned_shm``
does, when the next server starts, for each region whose launcher (named in the region's prefix) is gone.
"""

from __future__ import annotations

import ctypes
import os
import queue
import re
import subprocess
import threading
from concurrent.futures import Future
from pathlib import Path

import psutil

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
SHM_DIR = Path("/dev/shm")
_SHM_NAME = re.compile(r"ziya(\d+)p\d+_")  # shm_prefix's names: the launcher's pid, tritonserver's gRPC port

_prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: between fork and exec the child only calls it
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)


def shm_prefix(grpc_port: int) -> str:
    """The Python backend's shared-memory prefix for a server of this process on ``grpc_port``."""
    return f"ziya{os.getpid()}p{grpc_port}_"


def _die_with_parent(sig: int, parent: int):
    def arm() -> None:  # in the child, between fork and exec
        if _prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent:  # the parent died before the request was made
            os._exit(1)

    return arm


class _Spawner:
    """Forks every child from one thread that lives as long as the process (see the module's docstring)."""

    def __init__(self):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, args: list[str], death_signal: int, **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # not yet, or this is a forked copy
                self._thread = threading.Thread(target=self._run, name="ziya-spawner", daemon=True)
                self._thread.start()
        done: Future = Future()
        self._jobs.put((done, args, death_signal, kwargs))
        return done.result()

    def _run(self) -> None:
        while True:
            done, args, sig, kwargs = self._jobs.get()
            try:
                done.set_result(subprocess.Popen(args, preexec_fn=_die_with_parent(sig, os.getpid()), **kwargs))
            except BaseException as e:  # handed to the caller, whatever it is
                done.set_exception(e)


_spawner = _Spawner()


def popen(args: list[str], death_signal: int, **kwargs) -> subprocess.Popen:
    """``subprocess.Popen(args, **kwargs)`` for a child that gets ``death_signal`` when this process ends."""
    return _spawner.popen(args, int(death_signal), **kwargs)


def remove_orphaned_shm(shm_dir: Path = SHM_DIR) -> list[Path]:
    """Remove the shared-memory regions of servers whose launcher is gone; returns them. (In a PID namespace
    other than the launcher's, a live launcher can look gone; its tritonserver has its regions mapped already,
    and unlinking a mapped region only removes its name.)"""
    removed = []
    for p in shm_dir.glob("ziya*p*_*"):
        m = _SHM_NAME.match(p.name)
        if m and not psutil.pid_exists(int(m.group(1))):  # someone else's process counts as alive
            try:
                p.unlink()
            except OSError:
                continue
            removed.append(p)
    return removed
