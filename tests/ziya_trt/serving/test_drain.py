"""The drain file: models see it within a period, and act at its deadline."""

import threading
import time

from ziya_trt.serving.drain import DrainWatch, clear_drain, drain_file, start_drain


def test_a_drain_is_seen_then_its_deadline(tmp_path):
    events = []
    w = DrainWatch(drain_file(tmp_path), lambda: events.append(("drain", time.time())),
                   lambda: events.append(("deadline", time.time())), period_s=0.01)
    try:
        time.sleep(0.05)
        assert events == [] and not w.draining
        t0 = time.time()
        start_drain(tmp_path, t0 + 0.3)
        deadline = time.monotonic() + 3
        while len(events) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [e for e, _ in events] == ["drain", "deadline"] and w.draining
        assert events[0][1] - t0 < 0.2 and events[1][1] >= t0 + 0.3
    finally:
        w.close()
        clear_drain(tmp_path)
    assert not drain_file(tmp_path).exists()


def test_an_unreadable_drain_file_drains_at_once(tmp_path):
    drain_file(tmp_path).write_text("{not json")
    done = threading.Event()
    w = DrainWatch(drain_file(tmp_path), lambda: None, done.set, period_s=0.01)
    try:
        assert done.wait(2)
    finally:
        w.close()
