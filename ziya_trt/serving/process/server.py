"""``TritonServer``: one tritonserver hosting a rendered model repository, as a child of the launcher.

This module starts it and waits for it (on the caller's thread), puts the HTTP guard in front of it (a thread
and event loop of its own: ``http/guard.py``), restarts it (on the supervisor's thread: ``supervisor.py``) and
stops it (on the caller's thread again: ``shutdown.py``). Its command line and environment are ``command.py``'s,
the binary ``install.py``'s; an engine on several GPUs is ``multi_gpu.py``'s, and ``ziya-trt serve`` in a
process of its own ``serve_process.py``'s.
"""

from __future__ import annotations

import logging
import secrets
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from ...wire.tensors import ENGINE_INPUTS, FRONT_DOOR_INPUTS
from ..admission import SharedBudget, budget_file
from ..drain import clear_drain
from ..http.checks import ADMIN_HEADER
from ..http.guard import HttpGuard
from ..limits import HttpLimits, SupervisorLimits
from .command import TritonLaunch
from .endpoints import Endpoints, Ports, free_port
from .install import ServerStartError, TritonInstall, bundled_triton
from .procs import python_stubs
from .secret_arg import hide, write_private
from .shutdown import drain, exit_wait_s, in_flight, kill_group
from .spawn import popen, remove_orphaned_shm, shm_prefix
from .supervisor import RESTART_READY_S, Supervisor

log = logging.getLogger(__name__)


class TritonServer(Endpoints):
    """A running tritonserver, and what keeps it honest. Use as a context manager, or ``start``/``stop``.

    - The control, memory, statistics and model-config APIs need the operator's key (``admin_key``, a
      fresh random one unless given, kept in ``key_file``), checked by tritonserver (its command line shows a
      marker in the key's place: ``secret_arg.py``) and by the HTTP guard.
    - ``supervise``: a dead Python stub (or tritonserver itself) is a restart of the whole server on the
      same ports, with readiness false meanwhile; past ``restart_limit`` restarts in a minute the supervisor
      gives up (``alive`` turns false).
    - ``stop`` drains first (``drain.py``): new requests are refused, running ones get the drain timeout to
      finish, and what is left ends with ``[ziya:shutting_down]``; only then is tritonserver stopped.
    - Its limits (the HTTP guard's, the supervisor's) are its ``ServeConfig``'s ``http`` and ``supervisor``;
      a server of a repository without one takes them as ``http_limits`` and ``supervisor_limits``.
    - Its Python backend's shared-memory regions carry a prefix of this server's own, removed at stop.
    - tritonserver dies with this process, however it ends (``spawn.py``; the pytest fixtures' servers too).
    """

    # tritonserver's signal if this process ends without stopping it (killed, OOM): SIGKILL, as no one would be left
    # to end a SIGTERM shutdown that hangs. Its stubs follow it; the next start removes its shared memory.
    death_signal = signal.SIGKILL

    def __init__(
        self,
        repo: str | Path,
        ports: Ports | None = None,
        host: str = "127.0.0.1",
        install: TritonInstall | None = None,
        log_file: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        serve_config=None,
        admin_key: str | None = None,
        api_key: str | None = None,
        supervise: bool = True,
        http_limits: HttpLimits | None = None,
        supervisor_limits: SupervisorLimits | None = None,
    ):
        """``serve_config``: the ``ServeConfig`` the repository was rendered from; with it (and the HTTP guard)
        the OpenAI-compatible API is served on the HTTP port too, and the guard checks ``generate`` bodies.
        ``api_key``: what the OpenAI API's clients must send (``Authorization: Bearer``); None: no key."""
        if serve_config is not None and (http_limits or supervisor_limits):
            raise ValueError("a server of a ServeConfig has its limits (http, supervisor): give them there")
        self.repo, self.ports, self.host = Path(repo), ports or Ports.free(), host
        self.install, self.extra_args, self.serve_config = install, extra_args, serve_config
        self.log_file = Path(log_file) if log_file else self.repo.parent / "tritonserver.log"
        self.proc: subprocess.Popen | None = None
        self.http_limits = serve_config.http if serve_config is not None else http_limits or HttpLimits()
        self.supervisor_limits = (serve_config.supervisor if serve_config is not None
                                  else supervisor_limits or SupervisorLimits())
        # with a body limit, tritonserver's HTTP moves to an internal loopback port behind the guard
        self.guarded = self.http_limits.max_body_bytes > 0
        self._triton_http_port = free_port() if self.guarded else self.ports.http
        self._guard: HttpGuard | None = None
        self.admin_key = admin_key or secrets.token_urlsafe(24)
        self.api_key = api_key
        self.key_file = self.repo / "admin_key"  # this server's own: not beside another's repository
        self.key_marker = f"@admin-key-{secrets.token_hex(8)}@"  # what tritonserver's command line shows
        self.shm_prefix = shm_prefix(self.ports.grpc)
        self.drain_timeout_s = serve_config.drain_timeout_s if serve_config is not None else 20.0
        self.supervise = supervise
        self.supervisor = Supervisor(self, self.supervisor_limits.restart_limit)
        self.drained: bool | None = None  # after stop: whether nothing was in flight when tritonserver stopped
        self._stubs: dict[int, str] = {}  # the Python stubs at readiness: {pid: model}

    @property
    def exit_timeout_s(self) -> int:
        """tritonserver's own wait for in-flight requests when it stops (its ``--exit-timeout-secs``)."""
        return self.supervisor_limits.exit_timeout_s

    @property
    def restarts(self) -> list[float]:
        return self.supervisor.restarts

    @property
    def gave_up(self) -> bool:
        return self.supervisor.gave_up

    # --- what runs -----------------------------------------------------------------------------------
    def launch(self) -> TritonLaunch:
        return TritonLaunch(self.install, self.repo, self.host, "127.0.0.1" if self.guarded else self.host,
                            self._triton_http_port, self.ports, self.key_marker, self.shm_prefix,
                            self.exit_timeout_s, self.grpc_url, tuple(self.extra_args))

    def command(self) -> list[str]:
        return self.launch().command()

    def env(self) -> dict[str, str]:
        return self.launch().env()

    # --- start ---------------------------------------------------------------------------------------
    def start(self, ready_timeout_s: float | None = None) -> "TritonServer":
        """Start tritonserver and wait for it (``ready_timeout_s``; default: the supervisor limits')."""
        if self.install is None:
            self.install = bundled_triton()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        raise_open_files_limit()
        if orphans := remove_orphaned_shm():
            log.info("removed %d shared-memory regions of servers whose launcher is gone", len(orphans))
        clear_drain(self.repo)
        write_private(self.key_file, self.admin_key + "\n")
        self._spawn()
        try:
            if self.guarded:
                self._guard = HttpGuard(self.host, self.ports.http, self._triton_http_port, self.http_limits,
                                        extensions=self._guard_extensions(), admin_key=self.admin_key,
                                        specs=self._guard_specs()).start()
            self.wait_ready(ready_timeout_s or self.supervisor_limits.ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        if self.supervise:
            self.supervisor.start()
        return self

    def _spawn(self) -> None:
        with open(self.log_file, "ab") as log_out:
            cmd, env = hide(self.command(), self.env(), self.key_marker, self.admin_key, self.key_file)
            self.proc = popen(cmd, self.death_signal, stdout=log_out, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)

    def _guard_extensions(self) -> list:
        if self.serve_config is None:
            return []
        from ..http.openai.server import OpenAIServer

        cfg = self.serve_config.resolved()
        budget = SharedBudget(budget_file(self.repo), cfg.admission_budget)  # shared with the front doors
        return [OpenAIServer(cfg, self.grpc_url, f"http://127.0.0.1:{self._triton_http_port}", budget, self.api_key,
                             self.metrics_url)]

    def _guard_specs(self) -> dict:
        if self.serve_config is None:
            return {}
        c = self.serve_config
        return {c.engine_name: ENGINE_INPUTS} | {name: FRONT_DOOR_INPUTS for name in c.front_door_names}

    @property
    def openai_url(self) -> str | None:
        """The OpenAI-compatible API's base URL (``…/v1``), when it is served."""
        return f"http://{self.http_url}/v1" if self.serve_config is not None and self.guarded else None

    @property
    def alive(self) -> bool:
        """Serving, or being restarted; False once it exited unsupervised or the supervisor gave up."""
        if self.gave_up or self.proc is None:
            return False
        return self.supervise or self.proc.poll() is None

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(
                    f"tritonserver exited with code {self.proc.returncode}; last log lines:\n{self.log_tail()}"
                )
            if self._triton_ready():
                self._stubs = self._live_stubs()
                if "--allow-http=false" not in self.extra_args and not self._triton_ok("logging", key=True):
                    raise ServerStartError(f"tritonserver did not take the operator's key from {self.key_file} "
                                           "(secret_arg.py's library acts in a program named tritonserver)")
                return
            time.sleep(0.2)
        raise ServerStartError(f"tritonserver not ready after {timeout_s:.0f}s; last log lines:\n{self.log_tail()}")

    def _live_stubs(self) -> dict[int, str]:
        return python_stubs(self._stub_parent())

    def _triton_ready(self) -> bool:
        """tritonserver's own readiness, behind the guard if there is one."""
        return self._triton_ok("ready")

    def _triton_ok(self, what: str, key: bool = False) -> bool:
        """``/v2/health/<what>`` (ready or live) of tritonserver itself (behind the guard); ``key``: ``/v2/<what>``."""
        path, headers = (what, {ADMIN_HEADER: self.admin_key}) if key else (f"health/{what}", {})
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{self._triton_http_port}/v2/{path}", headers=headers)
            with urllib.request.urlopen(req, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # --- restart (the supervisor's thread) ---------------------------------------------------------------
    def restart(self, why: str, ready_timeout_s: float = RESTART_READY_S) -> None:
        """Restart tritonserver on the same ports; readiness is false (503) until it is back."""
        log.warning("%s: restarting tritonserver", why)
        self._set_unavailable(f"restarting ({why})")
        self._kill()
        clear_drain(self.repo)
        self._spawn()
        try:
            self.wait_ready(ready_timeout_s)
        except ServerStartError:
            log.exception("tritonserver did not come back")
            return  # the supervisor sees it and tries again, within the restart limit
        self._set_unavailable(None)

    def _set_unavailable(self, why: str | None) -> None:
        """What the guard answers meanwhile (503 with ``why``); None: serving again. From any thread: the guard
        makes the change on its own loop."""
        if self._guard is not None:
            self._guard.set_unavailable(why)

    # --- stop (the caller's thread) --------------------------------------------------------------------
    def stop(self, timeout_s: float | None = None) -> int | None:
        """Drain, then SIGTERM (the models unload), then kill whatever is left of the process group."""
        if self.proc is None:
            return None
        self.supervisor.stop()
        if self.proc.poll() is None:
            self.drained = self._drain()
            self._terminate()
            stand_in = self.serve_config is not None and self.serve_config.engine.value != "tensorrt_llm"
            wait = exit_wait_s(self.drained, stand_in, self.exit_timeout_s) if timeout_s is None else timeout_s
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver did not stop within %.0f s of SIGTERM; ending it", wait)
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        self._kill()
        clear_drain(self.repo)
        return self.proc.returncode

    def _drain(self) -> bool:
        """Refuse new requests, give running ones the drain timeout; True once nothing is in flight."""
        return drain(self.repo, self.drain_timeout_s, self.in_flight, self._set_unavailable)

    def in_flight(self) -> int:
        """Requests the front doors, the engine stand-ins and the OpenAI API hold, from their gauges."""
        return in_flight(self.metrics_url, self._guard.extensions if self._guard else ())

    def __enter__(self) -> "TritonServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- what MultiGpuTritonServer (multi_gpu.py, mpirun with a tritonserver per GPU) overrides -----------
    def _stub_parent(self) -> int:
        """The tritonserver whose children are the Python stubs."""
        return self.proc.pid

    def _terminate(self) -> None:
        """Ask tritonserver to stop: it unloads its models, waiting up to its exit timeout."""
        self.proc.send_signal(signal.SIGTERM)

    def _kill(self) -> None:
        """The whole process group at once: no stub outlives the server; then its shared memory."""
        kill_group(self.proc, self.shm_prefix)


def raise_open_files_limit() -> None:
    """Every connection is a file: take the hard limit, not the (often 1,024) soft one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
