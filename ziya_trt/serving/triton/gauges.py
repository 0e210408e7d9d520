"""Mirror a model's live figures into Triton gauges from one thread.

Metric objects are not safe to touch from several threads, so one thread owns them. Each update is
an IPC round trip in Triton's Python backend, and ``Metric.set()`` makes it while holding the stub's
GIL (over a millisecond when the server is busy; ``increment()`` releases it), so a gauge is moved by
increments, and only when its value changed. Nothing here imports Triton: the gauges are any objects
with ``increment(delta)``, and ``mirror`` is given the Python backend's module by the adapter. The
``tensorrt_llm`` backend's own families, which the engine stand-ins export too, follow the same way
(``backend_metrics.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

# the live figures the Python models export next to Triton's own: stats key -> (name, help, kind). A counter
# follows a monotonic figure by increments too
METRIC_ACTIVE = "ziya_engine_active_requests"
METRIC_QUEUED = "ziya_engine_queued_requests"
METRIC_TOKENS = "ziya_engine_generated_tokens_total"
METRIC_CANCELLED = "ziya_engine_cancelled_requests_total"
METRIC_FRONT_DOOR_INFLIGHT = "ziya_frontdoor_inflight_requests"
METRIC_KV_USED = "ziya_engine_kv_cache_blocks_in_use"
METRIC_KV_TOTAL = "ziya_engine_kv_cache_blocks_total"
ENGINE_GAUGES = {
    "active": (METRIC_ACTIVE, "requests holding an engine slot", "gauge"),
    "waiting": (METRIC_QUEUED, "requests waiting for a slot", "gauge"),
    "generated_tokens": (METRIC_TOKENS, "tokens generated", "counter"),
    "cancelled": (METRIC_CANCELLED, "requests cancelled", "counter"),
}
KV_GAUGES = {  # engines with a block KV cache (the reference engine)
    "kv_blocks_in_use": (METRIC_KV_USED, "KV cache blocks holding a running request's or a reusable prefix", "gauge"),
    "kv_blocks_total": (METRIC_KV_TOTAL, "KV cache blocks in all", "gauge"),
}
FRONT_DOOR_GAUGES = {"inflight": (METRIC_FRONT_DOOR_INFLIGHT, "text requests in flight", "gauge")}


class GaugeMirror:
    """Mirrors ``read()`` into ``gauges`` every ``period_s``, on a thread of its own (``start=True``), or when another
    mirror's thread calls ``sync`` (``also``): a model's metric updates all go out from one thread, never two at once
    (two threads each making metric round trips from a busy stub starved each other, and its responses)."""

    def __init__(self, read: Callable[[], dict[str, float]], gauges: dict[str, Any], period_s: float = 0.02,
                 name: str = "metrics", start: bool = True):
        self._read, self._gauges, self.period_s = read, gauges, period_s
        self._last = {k: 0.0 for k in gauges}  # a new gauge starts at 0
        self._also: list[list] = []  # [sync, period_s, when next]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True) if start else None
        if self._thread is not None:
            self._thread.start()

    def also(self, sync: Callable[[], None], period_s: float) -> None:
        """Call another mirror's ``sync`` from this mirror's thread, every ``period_s``."""
        self._also.append([sync, period_s, 0.0])

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
            now = time.monotonic()
            for entry in self._also:
                if now >= entry[2]:
                    entry[0]()
                    entry[2] = now + entry[1]

    def close(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


def mirror(pb, specs: dict[str, tuple[str, str, str]], read: Callable[[], dict[str, float]], labels: dict[str, str],
           name: str = "metrics") -> GaugeMirror:
    """Create the gauges and counters of ``specs`` with the Python backend's module ``pb`` and mirror ``read()``
    into them (the keys ``read()`` lacks are left out)."""
    kinds = {"gauge": pb.MetricFamily.GAUGE, "counter": pb.MetricFamily.COUNTER}
    present = read()
    families = {k: pb.MetricFamily(n, h, kinds[kind]) for k, (n, h, kind) in specs.items() if k in present}
    m = GaugeMirror(read, {k: f.Metric(labels=labels) for k, f in families.items()}, name=name)
    m.families = families  # a family must outlive its metrics
    return m
