"""One admission budget for every front of one engine: the text front door's model instances (Triton stub
processes) and the OpenAI API (the launcher's event loop) together admit at most the engine's slots + queue
(``max_batch_size + max_queue_size``), so what they let through is what the engine can hold, and a refusal comes
before any tokenising.

The budget is a file in the model repository with one byte per place: a request holds a place by an open file
description's lock on its byte (Linux OFD locks), so places are shared across processes and threads, and the kernel
gives back the places of a process that dies, however it dies. Taking a place costs one ``open`` and a lock attempt
per busy place tried; giving it back is one ``close``. The engine keeps its own limit as well (TensorRT-LLM's
``maxQueueSize``, the stand-ins' same rule): a client that calls the engine directly meets that one, and the fronts
read its refusal back as overloaded (``errors.from_wire``).
"""

from __future__ import annotations

import fcntl
import os
import random
import struct
import threading
from pathlib import Path

from ..errors import ServerOverloadedError

BUDGET_FILE = ".ziya_admission"  # in the model repository, beside the drain file


def budget_file(repo: str | Path) -> Path:
    return Path(repo) / BUDGET_FILE


class Place:
    """A held place; ``release`` gives it back (idempotent)."""

    __slots__ = ("_release",)

    def __init__(self, release):
        self._release = release

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def refusal(who: str, size: int) -> ServerOverloadedError:
    """What a front answers when every place is taken."""
    return ServerOverloadedError(f"{who}: overloaded, the engine's {size} places are taken; retry later")


class SharedBudget:
    """``size`` places shared by every process that opens the same file."""

    def __init__(self, path: str | Path, size: int):
        if size < 1:
            raise ValueError("an admission budget needs at least one place")
        self.path, self.size = Path(path), size

    def try_acquire(self) -> Place | None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        start = random.randrange(self.size)
        for k in range(self.size):
            if _lock(fd, (start + k) % self.size):
                return Place(lambda: os.close(fd))
        os.close(fd)
        return None


class LocalBudget:
    """The same within one process (tests, and a front with no model repository)."""

    def __init__(self, size: int):
        self.size = size
        self._sem = threading.BoundedSemaphore(size)

    def try_acquire(self) -> Place | None:
        return Place(self._sem.release) if self._sem.acquire(blocking=False) else None


def _lock(fd: int, offset: int) -> bool:
    # struct flock: l_type, l_whence, l_start, l_len, l_pid (0 for OFD locks), padded to its C size
    arg = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, arg)
        return True
    except (BlockingIOError, PermissionError):
        return False
