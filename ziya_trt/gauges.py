"""Mirror a model's live figures into Triton gauges from one thread.

Metric objects are not safe to touch from several threads, so one thread owns them. Each update is
an IPC round trip in Triton's Python backend, and ``Metric.set()`` makes it while holding the stub's
GIL (over a millisecond when the server is busy; ``increment()`` releases it), so a gauge is moved by
increments, and only when its value changed. Nothing here imports Triton: the gauges are any objects
with ``increment(delta)``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable


class GaugeMirror:
    def __init__(self, read: Callable[[], dict[str, float]], gauges: dict[str, Any], period_s: float = 0.02,
                 name: str = "metrics"):
        self._read, self._gauges, self.period_s = read, gauges, period_s
        self._last = {k: 0.0 for k in gauges}  # a new gauge starts at 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def sync(self) -> None:
        values = self._read()
        for k, g in self._gauges.items():
            v = float(values[k])
            if v != self._last[k]:
                g.increment(v - self._last[k])
                self._last[k] = v

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sync()

    def close(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
