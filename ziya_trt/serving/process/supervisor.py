"""``Supervisor``: the thread of the launcher that keeps tritonserver serving.

Every half second it looks at its server: has tritonserver exited, or has a Python backend stub it had when it
became ready died? Either is a restart of the whole server on the same ports (``TritonServer.restart``: the guard
answers 503 meanwhile, open streams end with an error at once). Past ``restart_limit`` restarts within a minute
it gives up: the guard answers "down", tritonserver is killed and ``gave_up`` turns true. An exit with code 0 is
a stop someone asked for (SIGTERM to tritonserver itself): no restart.

What it asks of its server: ``proc``, the stubs seen at readiness (``_stubs``) and alive now (``_live_stubs``),
whether tritonserver is live (``_triton_ok``), ``exit_timeout_s``, ``restart``, ``_set_unavailable``, ``_kill``.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time

log = logging.getLogger(__name__)
RESTART_READY_S = 180.0  # how long a restart waits for tritonserver to be ready again (k8s liveness outlasts it)
WATCH_EVERY_S = 0.5
RESTART_WINDOW_S = 60.0  # restart_limit counts the restarts within this long


class Supervisor:
    def __init__(self, server, restart_limit: int):
        self.server, self.restart_limit = server, restart_limit
        self.restarts: list[float] = []  # when (monotonic) each restart of the last minute began
        self.gave_up = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Watch no more (a restart in progress is not waited for past ``timeout_s``)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        srv = self.server
        while not self._stopping.wait(WATCH_EVERY_S):
            why = self.trouble()
            if why is None:
                continue
            if srv.proc.poll() == 0:  # told to stop (SIGTERM to tritonserver itself), and it did, cleanly
                log.info("tritonserver stopped (exit code 0); not restarting it")
                self.gave_up = True
                return
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S] + [now]
            if len(self.restarts) > self.restart_limit:
                log.error("%s; %d restarts within a minute: giving up", why, len(self.restarts) - 1)
                self.gave_up = True
                srv._set_unavailable("down")
                srv._kill()
                return
            srv.restart(why)

    def trouble(self) -> str | None:
        """Why the server must be restarted now, or None."""
        srv = self.server
        if srv.proc.poll() is not None:
            return f"tritonserver exited with code {srv.proc.returncode}"
        alive = srv._live_stubs()
        for pid, model in srv._stubs.items():
            if pid not in alive:
                # Shutting down, its models' stubs go first, and tritonserver is no longer live. A stub that
                # died makes 2.71 (not 2.51) report not ready, but it stays live: that is a restart, at once.
                if not srv._triton_ok("live"):
                    try:
                        srv.proc.wait(srv.exit_timeout_s + 10)
                    except subprocess.TimeoutExpired:
                        pass
                    return f"tritonserver exited with code {srv.proc.returncode}"
                return f"the Python backend stub of {model!r} died"
        return None
