"""How much CPU this machine charges a process for handling one message, by how long it slept before it.

A Python process that only echoes one byte back over a pipe, woken ``gap`` apart, and in bursts of 16 (one
in-flight batching step's tokens) 20 ms apart::

    python -m perf.micro.wake [--runs 3] [--messages 2000]

What it shows: the price of a wake-up after a sleep (caches and the core's power state, on a shared VM
especially), which every serving process pays once per token at light load whatever its code does. Each
figure is the echo process's own CPU (``getrusage``: user + system) per message. Prints a table, then the
raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

# (name, messages per wake, ms between wakes)
CASES = (("back to back", 1, 0.0), ("0.2 ms apart", 1, 0.2), ("1 ms apart", 1, 1.0), ("5 ms apart", 1, 5.0),
         ("20 ms apart", 1, 20.0), ("16 together, 20 ms apart", 16, 20.0))


def echo() -> int:
    """The child: echo each byte; at EOF print its CPU seconds and voluntary context switches since the first."""
    rfd, wfd = sys.stdin.fileno(), sys.stdout.fileno()
    n, base = -1, None
    while True:
        b = os.read(rfd, 4096)
        if not b:
            break
        if base is None:  # start-up is over: measure from here
            base = resource.getrusage(resource.RUSAGE_SELF)
        n += len(b)
        os.write(wfd, b)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru.ru_utime + ru.ru_stime) - (base.ru_utime + base.ru_stime) if base else 0.0
    sys.stderr.write(json.dumps({"cpu_s": cpu, "vcsw": ru.ru_nvcsw - (base.ru_nvcsw if base else 0), "n": n}) + "\n")
    return 0


def one(messages: int, per_wake: int, gap_ms: float) -> tuple[float, float]:
    """(µs of the echo's CPU per message, voluntary context switches per message), its start-up excluded."""
    child = subprocess.Popen([sys.executable, "-m", "perf.micro.wake", "--echo"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    w, r = child.stdin.fileno(), child.stdout.fileno()
    os.write(w, b"x")  # the child measures from this first exchange on, its start-up left out
    os.read(r, 1)
    t0, wakes = time.perf_counter(), max(1, messages // per_wake)
    for i in range(wakes):
        target = t0 + i * gap_ms / 1000
        while (left := target - time.perf_counter()) > 0:
            time.sleep(left)
        for _ in range(per_wake):  # one at a time, each answered, as a stream's responses are
            os.write(w, b"x")
            os.read(r, 1)
    child.stdin.close()
    stats = json.loads(child.stderr.read().decode().strip().splitlines()[-1])
    child.wait()
    n = wakes * per_wake
    if stats["n"] != n:
        raise RuntimeError(f"the echo saw {stats['n']} messages, not {n}")
    return stats["cpu_s"] / n * 1e6, stats["vcsw"] / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--messages", type=int, default=2000, help="per case and run (cases 5 ms apart or more: a fifth)")
    ap.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.echo:
        return echo()
    got: dict[str, list[list[float]]] = {name: [] for name, _, _ in CASES}
    for _ in range(args.runs):  # the cases interleaved, so drift falls on all of them
        for name, per_wake, gap in CASES:
            n = args.messages if gap < 5 else max(per_wake, args.messages // 5)
            got[name].append(list(one(n, per_wake, gap)))
    print(f"{'case':28s} {'echo CPU µs/message':>20s} {'vol. ctx sw./message':>21s}")
    for name, runs in got.items():
        cpu, cs = zip(*runs)
        print(f"{name:28s} {min(cpu):9.1f}–{max(cpu):<9.1f} {min(cs):9.2f}–{max(cs):<9.2f}")
    print(json.dumps(got))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
