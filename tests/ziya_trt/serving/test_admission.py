"""The one admission budget shared by every front: places across threads and processes, given back by the kernel
when a holder dies."""

import subprocess
import sys
import textwrap

from ziya_trt.serving.admission import LocalBudget, SharedBudget


def test_places_are_shared_across_holders_and_given_back(tmp_path):
    a, b = SharedBudget(tmp_path / "budget", 3), SharedBudget(tmp_path / "budget", 3)  # two fronts, one file
    held = [a.try_acquire(), b.try_acquire(), a.try_acquire()]
    assert all(held) and a.try_acquire() is None and b.try_acquire() is None
    held[1].release()
    held[1].release()  # twice is once
    again = b.try_acquire()
    assert again is not None and a.try_acquire() is None
    for p in (held[0], held[2], again):
        p.release()
    assert [SharedBudget(tmp_path / "budget", 3).try_acquire() is not None for _ in range(3)] == [True] * 3


def test_a_process_that_dies_holding_places_gives_them_back(tmp_path):
    path = tmp_path / "budget"
    code = textwrap.dedent(f"""
        import os, sys
        from ziya_trt.serving.admission import SharedBudget
        b = SharedBudget({str(path)!r}, 2)
        held = [b.try_acquire(), b.try_acquire()]
        print("held", flush=True)
        sys.stdin.readline()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        assert SharedBudget(path, 2).try_acquire() is None  # the other process holds both
        child.kill()  # no chance to release anything
        child.wait(10)
        assert SharedBudget(path, 2).try_acquire() is not None
    finally:
        child.kill()
        child.wait()


def test_the_local_budget_counts_the_same_way():
    b = LocalBudget(1)
    p = b.try_acquire()
    assert p is not None and b.try_acquire() is None
    p.release()
    p.release()
    assert b.try_acquire() is not None and b.try_acquire() is None
