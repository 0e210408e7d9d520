"""Draining on shutdown: how the launcher tells the models to stop taking requests, and when to give up
on the ones still running.

tritonserver's own SIGTERM handling cuts open gRPC streams (``Stream removed``), truncates HTTP ones and
can crash unloading a model with requests in flight. So the launcher drains first: it writes the drain
file (``DRAIN_FILE`` at the top of the model repository) with a deadline, every Python model's
``DrainWatch`` sees it within a tenth of a second, refuses new requests with ``[ziya:shutting_down]``,
lets running ones finish, and at the deadline ends what is left with the same typed error. Only then
does the launcher stop tritonserver, which has nothing in flight to lose.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

DRAIN_FILE = ".ziya_drain"


def drain_file(repo: str | Path) -> Path:
    return Path(repo) / DRAIN_FILE


def start_drain(repo: str | Path, deadline: float) -> Path:
    """Tell the models of ``repo`` to drain until ``deadline`` (``time.time()`` seconds)."""
    p = drain_file(repo)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"deadline": deadline}))
    tmp.replace(p)  # atomic: a reader never sees half a file
    return p


def clear_drain(repo: str | Path) -> None:
    drain_file(repo).unlink(missing_ok=True)


class DrainWatch:
    """Polls the drain file; calls ``on_drain()`` once when it appears and ``on_deadline()`` once its
    deadline has passed. Stops with ``close()``."""

    def __init__(self, path: str | Path, on_drain: Callable[[], None], on_deadline: Callable[[], None],
                 period_s: float = 0.1, name: str = "drain"):
        self.path, self.period_s = Path(path), period_s
        self._on_drain, self._on_deadline = on_drain, on_deadline
        self.deadline: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def draining(self) -> bool:
        return self.deadline is not None

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            if self.deadline is None:
                self.deadline = self._read()
                if self.deadline is not None:
                    self._call(self._on_drain)
            if self.deadline is not None and time.time() >= self.deadline:
                self._call(self._on_deadline)
                return

    def _read(self) -> float | None:
        try:
            return float(json.loads(self.path.read_text())["deadline"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("unreadable drain file %s: draining now", self.path)
            return time.time()

    def _call(self, fn) -> None:
        try:
            fn()
        except Exception:  # never take the watcher down with it
            log.exception("drain callback failed")

    def close(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
