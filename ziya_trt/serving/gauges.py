"""Mirror a model's live figures into Triton gauges from one thread.

Metric objects are not safe to touch from several threads, so one thread owns them. Each update is
an IPC round trip in Triton's Python backend, and ``Metric.set()`` makes it while holding the stub's
GIL (over a millisecond when the server is busy; ``increment()`` releases it), so a gauge is moved by
increments, and only when its value changed. Nothing here imports Triton: the gauges are any objects
with ``increment(delta)``, and ``mirror`` is given the Python backend's module by the adapter.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

# the Prometheus series the Python models export next to Triton's own: stats key -> (name, help)
METRIC_ACTIVE = "ziya_engine_active_requests"
METRIC_QUEUED = "ziya_engine_queued_requests"
METRIC_TOKENS = "ziya_engine_generated_tokens_total"
METRIC_CANCELLED = "ziya_engine_cancelled_requests_total"
METRIC_FRONT_DOOR_INFLIGHT = "ziya_frontdoor_inflight_requests"
ENGINE_GAUGES = {
    "active": (METRIC_ACTIVE, "requests holding an engine slot"),
    "waiting": (METRIC_QUEUED, "requests waiting for a slot"),
    "generated_tokens": (METRIC_TOKENS, "tokens generated"),
    "cancelled": (METRIC_CANCELLED, "requests cancelled"),
}
FRONT_DOOR_GAUGES = {"inflight": (METRIC_FRONT_DOOR_INFLIGHT, "text requests in flight")}


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


def mirror(pb, specs: dict[str, tuple[str, str]], read: Callable[[], dict[str, float]], labels: dict[str, str],
           name: str = "metrics") -> GaugeMirror:
    """Create the gauges of ``specs`` with the Python backend's module ``pb`` and mirror ``read()`` into them."""
    families = {k: pb.MetricFamily(n, h, pb.MetricFamily.GAUGE) for k, (n, h) in specs.items()}
    m = GaugeMirror(read, {k: f.Metric(labels=labels) for k, f in families.items()}, name=name)
    m.families = families  # a family must outlive its metrics
    return m
