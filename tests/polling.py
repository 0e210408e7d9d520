"""Waiting in tests for something another thread or process does."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(cond: Callable[[], object], timeout_s: float = 5.0, every_s: float = 0.002) -> bool:
    """Poll ``cond`` until it is true (True) or ``timeout_s`` has passed (False)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)
    return True
