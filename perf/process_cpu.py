"""CPU seconds each serving process spends over a sweep point, per streamed token.

What carries from a shared benchmark box to a GPU server is not tokens per second (that mostly measures the box)
but the CPU each process spends per token it streams. This reads user + system CPU time (psutil) for every process
of the server — tritonserver, each Python backend stub by model, the launcher (which also runs the HTTP guard and
the OpenAI API) — and for the load generator itself, around the measured part of each point.

The server is found from the process this run started, or, for ``--url`` on this machine, from the process that
listens on its port. Where it cannot be seen (another host, or another user's processes), the result says so and
gives no figure.
"""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit

import psutil

from ziya_trt.serving.process.procs import Proc, descendants, every

LOAD_GENERATOR = "load generator"


def role(p: Proc, root: int) -> str:
    exe = os.path.basename(p.argv[0]) if p.argv else ""
    if exe == "tritonserver":
        return "tritonserver"
    if p.stub_model is not None:
        return f"stub {p.stub_model}"
    if p.pid == root:
        return "launcher" if _is_launcher(p) else exe or str(p.pid)
    return exe or str(p.pid)


def _is_launcher(p: Proc) -> bool:
    return any("ziya_trt" in a or "ziya-trt" in a for a in p.argv[:4]) and "serve" in p.argv


def listening_pid(port: int) -> int | None:
    """The process that listens on TCP ``port`` here, if this user may see it."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    return next((c.pid for c in conns if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                 and c.pid is not None), None)


def _is_local(host: str) -> bool:
    if host in ("localhost", "::1", "0.0.0.0", "") or host.startswith("127."):
        return True
    try:
        return host in {socket.gethostname(), socket.getfqdn()} or host in socket.gethostbyname_ex(
            socket.gethostname())[2]
    except OSError:
        return False


def server_root(url: str) -> tuple[int | None, str | None]:
    """The server's top process for a grpc:// or http:// URL on this machine, or why it cannot be seen."""
    u = urlsplit(url if "://" in url else f"grpc://{url}")
    if not _is_local(u.hostname or ""):
        return None, f"the server at {u.hostname} is on another machine: its processes are not visible from here"
    pid = listening_pid(u.port or 8001)
    if pid is None:
        return None, f"no process of this user listens on port {u.port} here"
    procs = every()
    # climb to the launcher that started tritonserver, when there is one
    p = procs.get(pid)
    while p is not None and not _is_launcher(p) and p.ppid in procs and _is_launcher(procs[p.ppid]):
        p = procs[p.ppid]
    return (p.pid if p else pid), None


class Watch:
    """Snapshots of a server's processes and this one; ``result`` turns two into µs per token."""

    def __init__(self, root: int | None, why_not: str | None = None):
        self.root, self.why_not = root, why_not

    def snapshot(self) -> dict:
        me = time.process_time()  # this process, every thread: the load generator
        procs = {}
        if self.root is not None:
            everyone = every()
            procs = {pid: everyone[pid] for pid in (self.root, *descendants(self.root, everyone)) if pid in everyone}
        return {"t": time.monotonic(), "self": me,
                "procs": {pid: (role(p, self.root), p.cpu_s) for pid, p in procs.items()}}

    def result(self, before: dict, after: dict, tokens: int) -> dict:
        wall = after["t"] - before["t"]
        roles: dict[str, dict] = {}
        for pid, (name, cpu) in after["procs"].items():
            was = before["procs"].get(pid)
            r = roles.setdefault(name, {"pids": [], "cpu_s": 0.0})
            r["pids"].append(pid)
            r["cpu_s"] += cpu - (was[1] if was else 0.0)  # a process started in the window counts from zero
        gone = sorted(set(before["procs"]) - set(after["procs"]))
        per = lambda s: round(1e6 * s / tokens, 1) if tokens else None  # noqa: E731
        for r in roles.values():
            r["cpu_s"] = round(r["cpu_s"], 3)
            r["us_per_token"] = per(r["cpu_s"])
            r["cores"] = round(r["cpu_s"] / wall, 3) if wall > 0 else None
        gen = after["self"] - before["self"]
        server = sum(r["cpu_s"] for r in roles.values())
        return {"visible": self.root is not None, "why_not": self.why_not, "tokens": tokens,
                "window_s": round(wall, 3), "processes": roles, "exited_in_window": gone,
                "server_us_per_token": per(server) if self.root is not None else None,
                LOAD_GENERATOR: {"cpu_s": round(gen, 3), "us_per_token": per(gen),
                                 "cores": round(gen / wall, 3) if wall > 0 else None}}


def print_table(points: list[dict], con) -> None:
    """µs of CPU per streamed token, one column per process, one row per point."""
    from rich.table import Table

    from .report import print_wide

    rows = [p for p in points if p.get("cpu")]
    if not rows:
        return
    hidden = {p["cpu"]["why_not"] for p in rows if not p["cpu"]["visible"]}
    names = sorted({n for p in rows for n in p["cpu"]["processes"]}, key=lambda n: (not n.startswith("triton"), n))
    t = Table(title="CPU µs per streamed token (utime+stime over the measured requests)")
    for c in ("point", "tokens", *names, "server total", LOAD_GENERATOR):
        t.add_column(c, justify="right" if c != "point" else "left")
    fmt = lambda v: "—" if v is None else f"{v:,.0f}"  # noqa: E731
    for p in rows:
        c = p["cpu"]
        t.add_row(p["label"], f"{c['tokens']:,}",
                  *[fmt(c["processes"][n]["us_per_token"]) if n in c["processes"] else "" for n in names],
                  fmt(c["server_us_per_token"]), fmt(c[LOAD_GENERATOR]["us_per_token"]))
    print_wide(t, con)
    con.print("launcher: ziya-trt serve, which runs the HTTP guard and the OpenAI API; stub M: the Python backend "
              "of model M (the front door is stub ziya); load generator: this process")
    for why in hidden:
        con.print(f"server processes not visible: {why}")
