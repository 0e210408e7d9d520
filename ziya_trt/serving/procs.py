"""A server's processes, read from ``/proc``: who is whose child, their command lines and CPU time, and which
are Triton Python-backend stubs (and of which model).

The launcher watches its stubs with it, the multi-GPU launcher finds mpirun's ranks, and the benchmark reads
each process's CPU time per token. Linux only, as tritonserver is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
STUB = "triton_python_backend_stub"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    cpu_s: float  # utime + stime, every thread
    argv: tuple[str, ...]

    @property
    def stub_model(self) -> str | None:
        """The model whose Python backend stub this is (its argv[1] is ``…/<model>/<version>/model.py``)."""
        if len(self.argv) > 1 and os.path.basename(self.argv[0]) == STUB:
            return Path(self.argv[1]).parent.parent.name
        return None


def read(pid: int, argv: bool = True) -> Proc | None:
    """One process, or None once it is gone (or is not this user's to read); ``argv=False`` leaves its
    command line unread (empty)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        args = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0") if argv else ()
        f = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
        return Proc(pid, int(f[1]), (int(f[11]) + int(f[12])) / _TICK,
                    tuple(a.decode(errors="replace") for a in args if a))
    except (OSError, ValueError, IndexError):
        return None


def every(argv: bool = True) -> dict[int, Proc]:
    """Every process this user can read, by pid."""
    out = {}
    for d in PROC.iterdir():
        if d.name.isdigit() and (p := read(int(d.name), argv)) is not None:
            out[p.pid] = p
    return out


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
    children = (read(c) for c, p in every(argv=False).items() if p.ppid == pid)  # command lines of these only
    return {c.pid: c.stub_model for c in children if c is not None and c.stub_model is not None}
