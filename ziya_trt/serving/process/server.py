"""Start, supervise, drain and stop a tritonserver hosting a rendered model repository (``TritonServer``),
or ``ziya-trt serve`` as a process of its own (``ServeProcess``). Which binary runs is ``install``'s."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ...wire.tensors import ENGINE_INPUTS, FRONT_DOOR_INPUTS
from ..admission import SharedBudget, budget_file
from ..drain import clear_drain, start_drain
from ..engine_link import GRPC_URL_ENV
from ..triton.gauges import METRIC_ACTIVE, METRIC_FRONT_DOOR_INFLIGHT, METRIC_QUEUED
from ..http.guard import HttpGuard
from ..limits import HttpLimits, SupervisorLimits
from .install import ServerStartError, TritonInstall, bundled_triton
from .procs import python_stubs
from ..http.checks import ADMIN_HEADER, RESTRICTED_APIS
from .secret_arg import hide, write_private
from .spawn import popen, remove_orphaned_shm, shm_prefix

log = logging.getLogger(__name__)
RESTART_READY_S = 180.0  # how long a restart waits for tritonserver to be ready again (k8s liveness outlasts it)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def free(cls) -> "Ports":
        return cls(free_port(), free_port(), free_port())


class _Endpoints:
    """Where a server started here answers (``host`` and ``ports`` set by the subclass)."""

    host: str
    ports: Ports

    @property
    def client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    @property
    def http_url(self) -> str:
        return f"{self.client_host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.client_host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.client_host}:{self.ports.metrics}/metrics"

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False


class TritonServer(_Endpoints):
    """A running tritonserver, and what keeps it honest. Use as a context manager, or ``start``/``stop``.

    - The control, memory, statistics and model-config APIs need the operator's key (``admin_key``, a
      fresh random one unless given, kept in ``key_file``), checked by tritonserver (its command line shows a
      marker in the key's place: ``secret_arg.py``) and by the HTTP guard.
    - ``supervise``: a dead Python stub (or tritonserver itself) is a restart of the whole server on the
      same ports, with readiness false meanwhile; open streams end with an error at once. Past
      ``restart_limit`` restarts in a minute it gives up (``alive`` turns false).
    - Its limits (the HTTP guard's, the supervisor's) are its ``ServeConfig``'s ``http`` and ``supervisor``;
      a server of a repository without one takes them as ``http_limits`` and ``supervisor_limits``.
    - ``stop`` drains first (``drain.py``): new requests are refused, running ones get the drain timeout to
      finish, and what is left ends with ``[ziya:shutting_down]``; only then is tritonserver stopped.
    - Its Python backend's shared-memory regions carry a prefix of this server's own, removed at stop.
    - One tritonserver: an engine built for several GPUs is served by ``multi_gpu.MultiGpuTritonServer``.
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
        supervise: bool = True,
        http_limits: HttpLimits | None = None,
        supervisor_limits: SupervisorLimits | None = None,
    ):
        """``serve_config``: the ``ServeConfig`` the repository was rendered from; with it (and the HTTP guard)
        the OpenAI-compatible API is served on the HTTP port too, and the guard checks ``generate`` bodies."""
        self.repo = Path(repo)
        self.ports = ports or Ports.free()
        self.host = host
        self.install = install
        self.log_file = Path(log_file) if log_file else self.repo.parent / "tritonserver.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        if serve_config is not None and (http_limits or supervisor_limits):
            raise ValueError("a server of a ServeConfig has its limits (http, supervisor): give them there")
        self.http_limits = serve_config.http if serve_config is not None else http_limits or HttpLimits()
        self.supervisor_limits = (serve_config.supervisor if serve_config is not None
                                  else supervisor_limits or SupervisorLimits())
        # with a body limit, tritonserver's HTTP moves to an internal loopback port behind the guard
        self.guarded = self.http_limits.max_body_bytes > 0
        self._triton_http_port = free_port() if self.guarded else self.ports.http
        self._guard: HttpGuard | None = None
        self.serve_config = serve_config
        self.admin_key = admin_key or secrets.token_urlsafe(24)
        self.key_file = self.repo / "admin_key"  # this server's own: not beside another's repository
        self.key_marker = f"@admin-key-{secrets.token_hex(8)}@"  # what tritonserver's command line shows
        self.shm_prefix = shm_prefix(self.ports.grpc)
        self.drain_timeout_s = serve_config.drain_timeout_s if serve_config is not None else 20.0
        self.supervise = supervise
        self.restarts: list[float] = []
        self.drained: bool | None = None  # after stop: whether nothing was in flight when tritonserver stopped
        self.gave_up = False
        self._stubs: dict[int, str] = {}
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    def command(self) -> list[str]:
        inst = self.install
        restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self.key_marker}"
        return [
            str(inst.binary),
            f"--model-repository={self.repo}",
            f"--backend-directory={inst.backend_dir}",
            f"--http-address={'127.0.0.1' if self.guarded else self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self._triton_http_port}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            "--model-control-mode=none",  # clients cannot load or unload models
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--allow-metrics=true",
            "--metrics-interval-ms=100",
            "--log-verbose=0",
            *self.extra_args,
        ]

    def mpi_command(self, world_size: int) -> list[str]:
        """Multi-GPU: this server's command as ``mpirun`` runs it for ``world_size`` ranks (leader mode), the
        command ``MultiGpuTritonServer`` starts (``multi_gpu.py``; generated here, run only on a GPU machine)."""
        from .multi_gpu import leader_mode_command

        engine = self.serve_config.engine_name if self.serve_config is not None else "tensorrt_llm"
        return leader_mode_command(TritonServer.command(self), world_size, self.shm_prefix, engine)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # LD_LIBRARY_PATH keeps its order (in an NGC image the entrypoint put the CUDA forward-compatibility
        # libraries first); the bundled tritonserver's own libraries go in front of it, Python's LIBDIR (for the
        # python backend stub's libpython) after it, each only where it is not there already
        have = [d for d in env.get("LD_LIBRARY_PATH", "").split(":") if d]
        front = [str(d) for d in self.install.lib_dirs if str(d) not in have]
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        back = [libdir] if libdir and libdir not in have + front else []
        env["LD_LIBRARY_PATH"] = ":".join(front + have + back)
        # the python backend stub must find this environment's interpreter and packages
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = ":".join([root, env.get("PYTHONPATH", "")]).strip(":")
        env[GRPC_URL_ENV] = self.grpc_url  # the front door calls the engine through this server's gRPC endpoint
        return env

    # --- start ---------------------------------------------------------------------------------------
    @property
    def exit_timeout_s(self) -> int:
        """tritonserver's own wait for in-flight requests when it stops (its ``--exit-timeout-secs``)."""
        return self.supervisor_limits.exit_timeout_s

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
            self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
            self._supervisor.start()
        return self

    def _spawn(self) -> None:
        with open(self.log_file, "ab") as log:
            cmd, env = hide(self.command(), self.env(), self.key_marker, self.admin_key, self.key_file)
            self.proc = popen(cmd, self.death_signal, stdout=log, stderr=subprocess.STDOUT, env=env,
                              start_new_session=True)

    def _guard_extensions(self) -> list:
        if self.serve_config is None:
            return []
        from ..http.openai.server import OpenAIServer

        cfg = self.serve_config.resolved()
        budget = SharedBudget(budget_file(self.repo), cfg.admission_budget)  # shared with the front doors
        return [OpenAIServer(cfg, self.grpc_url, f"http://127.0.0.1:{self._triton_http_port}", budget)]

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

    # --- supervision -------------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            why = self._trouble()
            if why is None:
                continue
            if self.proc.poll() == 0:  # told to stop (SIGTERM to tritonserver itself), and it did, cleanly
                log.info("tritonserver stopped (exit code 0); not restarting it")
                self.gave_up = True
                return
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < 60] + [now]
            if len(self.restarts) > self.supervisor_limits.restart_limit:
                log.error("%s; %d restarts within a minute: giving up", why, len(self.restarts) - 1)
                self.gave_up = True
                self._set_unavailable("down")
                self._kill()
                return
            self.restart(why)

    def _trouble(self) -> str | None:
        if self.proc.poll() is not None:
            return f"tritonserver exited with code {self.proc.returncode}"
        alive = self._live_stubs()
        for pid, model in self._stubs.items():
            if pid not in alive:
                # Shutting down, its models' stubs go first, and tritonserver is no longer live. A stub that
                # died makes 2.71 (not 2.51) report not ready, but it stays live: that is a restart, at once.
                if not self._triton_ok("live"):
                    try:
                        self.proc.wait(self.exit_timeout_s + 10)
                    except subprocess.TimeoutExpired:
                        pass
                    return f"tritonserver exited with code {self.proc.returncode}"
                return f"the Python backend stub of {model!r} died"
        return None

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
        """What the guard answers meanwhile (503 with ``why``); None: serving again. Called from the supervisor's
        thread or the caller's: the guard makes the change on its own loop."""
        if self._guard is not None:
            self._guard.set_unavailable(why)

    def _kill(self) -> None:
        """The whole process group at once: no stub outlives the server; then its shared memory."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for p in Path("/dev/shm").glob(f"{self.shm_prefix}*"):
            p.unlink(missing_ok=True)

    # --- stop ----------------------------------------------------------------------------------------------
    def stop(self, timeout_s: float | None = None) -> int | None:
        """Drain, then SIGTERM (the models unload), then kill whatever is left of the process group."""
        if self.proc is None:
            return None
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        if self.proc.poll() is None:
            self.drained = self._drain()
            self._terminate()
            # nothing is in flight once drained: the stand-ins unload in seconds. (tritonserver 2.51 can keep a
            # model loaded until its exit timeout after a client cancels a stream it has just finished.)
            stand_in = self.serve_config is not None and self.serve_config.engine.value != "tensorrt_llm"
            wait = (5.0 if self.drained and stand_in else self.exit_timeout_s + 10) if timeout_s is None else timeout_s
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
        deadline = time.time() + self.drain_timeout_s
        start_drain(self.repo, deadline)
        self._set_unavailable("shutting down")
        while time.time() < deadline + 2.0:  # after the deadline, the models end what is left
            if self.in_flight() == 0:
                return True
            time.sleep(0.05)
        return self.in_flight() == 0

    def in_flight(self) -> int:
        """Requests the front doors, the engine stand-ins and the OpenAI API hold, from their gauges."""
        n = sum(getattr(e, "inflight", 0) for e in (self._guard.extensions if self._guard else ()))
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return n
        for line in text.splitlines():
            if line.startswith((METRIC_FRONT_DOOR_INFLIGHT, METRIC_ACTIVE, METRIC_QUEUED)):
                n += int(float(line.rsplit(" ", 1)[1]))
        return n

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


def raise_open_files_limit() -> None:
    """Every connection is a file: take the hard limit, not the (often 1,024) soft one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class ServeProcess(_Endpoints):
    """``ziya-trt serve`` for a ``ServeConfig``, in a process of its own (its launcher, HTTP guard and OpenAI
    API do not share a GIL with the caller: what a benchmark needs). Same URLs as ``TritonServer``."""

    def __init__(self, cfg, run_dir: str | Path, ports: Ports | None = None, host: str = "127.0.0.1"):
        self.cfg, self.run_dir, self.ports = cfg, Path(run_dir), ports or Ports.free()
        self.host, self.exit_timeout_s = host, cfg.supervisor.exit_timeout_s
        self.log_file = self.run_dir / "serve.log"
        self.proc: subprocess.Popen | None = None

    @property
    def openai_url(self) -> str:
        return f"http://{self.http_url}/v1"

    def start(self, ready_timeout_s: float | None = None) -> "ServeProcess":
        """Start ``ziya-trt serve`` on the config and wait for it (``ready_timeout_s``, passed on to it; default:
        the config's)."""
        ready_timeout_s = ready_timeout_s or self.cfg.supervisor.ready_timeout_s
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = self.cfg.write(self.run_dir / "serve_config.json")
        cmd = [sys.executable, "-m", "ziya_trt.cli", "serve", "--config", str(cfg_file), "--host", self.host,
               "--http-port", str(self.ports.http), "--grpc-port", str(self.ports.grpc),
               "--metrics-port", str(self.ports.metrics), "--repo-dir", str(self.run_dir / "repo"),
               "--log-file", str(self.run_dir / "tritonserver.log"),
               "--ready-timeout", str(ready_timeout_s)]  # the child waits as long as this does
        with open(self.log_file, "ab") as log:  # told SIGTERM if this process dies: it drains, stops tritonserver
            self.proc = popen(cmd, signal.SIGTERM, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"ziya-trt serve exited with code {self.proc.returncode}; see {self.log_file}")
            if self.is_ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(f"ziya-trt serve not ready after {ready_timeout_s:.0f}s; see {self.log_file}")

    def stop(self) -> int | None:
        """SIGTERM (the launcher drains and stops tritonserver), then kill whatever is left of its group."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.exit_timeout_s + 20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return self.proc.wait(5)

    def __enter__(self) -> "ServeProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
