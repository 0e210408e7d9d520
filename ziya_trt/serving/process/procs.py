"""A server's processes, through psutil: who is whose child, their command lines and CPU time, and which are
Triton Python-backend stubs (and of which model).

The launcher watches its stubs with it, the multi-GPU launcher finds mpirun's ranks, and the benchmark reads
each process's CPU time per token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

STUB = "triton_python_backend_stub"
_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    cpu_s: float  # user + system, every thread
    argv: tuple[str, ...]

    @property
    def stub_model(self) -> str | None:
        """The model whose Python backend stub this is (its argv[1] is ``…/<model>/<version>/model.py``)."""
        if len(self.argv) > 1 and os.path.basename(self.argv[0]) == STUB:
            return Path(self.argv[1]).parent.parent.name
        return None


def _proc(p: psutil.Process, argv: bool) -> Proc | None:
    try:
        with p.oneshot():
            t = p.cpu_times()
            return Proc(p.pid, p.ppid(), t.user + t.system, tuple(p.cmdline()) if argv else ())
    except _GONE:
        return None


def read(pid: int, argv: bool = True) -> Proc | None:
    """One process, or None once it is gone (or is not this user's to read); ``argv=False`` leaves its
    command line unread (empty)."""
    try:
        return _proc(psutil.Process(pid), argv)
    except _GONE:
        return None


def every(argv: bool = True) -> dict[int, Proc]:
    """Every process this user can read, by pid."""
    return {p.pid: p for p in (_proc(q, argv) for q in psutil.process_iter()) if p is not None}


def descendants(pid: int, procs: dict[int, Proc] | None = None) -> list[int]:
    """Every process below ``pid`` (not ``pid`` itself), whatever process group it is in."""
    children: dict[int, list[int]] = {}
    for p in (procs if procs is not None else every(argv=False)).values():
        children.setdefault(p.ppid, []).append(p.pid)
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out


def python_stubs(pid: int) -> dict[int, str]:
    """The Python backend stubs of tritonserver ``pid``: {stub pid: model directory name}."""
    try:
        children = psutil.Process(pid).children()
    except _GONE:
        return {}
    found = (_proc(c, argv=True) for c in children)
    return {c.pid: c.stub_model for c in found if c is not None and c.stub_model is not None}
