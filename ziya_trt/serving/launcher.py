"""Start, wait for, and stop a tritonserver hosting a rendered model repository.

By default it runs the tritonserver 2.51 binary that the ``nvidia-pytriton`` wheel ships (CPU, with
the python backend), laid out once under the cache directory. ``tritonserver=PATH`` uses an existing
binary instead, e.g. ``/opt/tritonserver/bin/tritonserver`` in the 25.12-trtllm container.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_dir
from ..errors import ZiyaError
from .engine_link import GRPC_URL_ENV
from .http_guard import DEFAULT_MAX_BODY, HttpGuard


class ServerStartError(ZiyaError):
    """tritonserver could not be found or did not become ready."""


@dataclass(frozen=True)
class TritonInstall:
    binary: Path
    backend_dir: Path
    lib_dirs: tuple[Path, ...] = ()


def bundled_triton() -> TritonInstall:
    """Lay out the pytriton wheel's tritonserver (bin, backends, caches, python stub) once."""
    try:
        import pytriton
    except ImportError as e:
        raise ServerStartError("nvidia-pytriton is not installed; pass --tritonserver PATH instead") from e
    pkg = Path(pytriton.__file__).parent / "tritonserver"
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = pkg / "python_backend_stubs" / ver / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerStartError(f"nvidia-pytriton has no python backend stub for Python {ver}")
    dest = cache_dir("tritonserver", f"py{ver}")
    marker = dest / ".complete"
    if not marker.exists() or marker.read_text() != str(pkg):
        for part in ("bin", "backends", "caches"):
            if (dest / part).exists():
                shutil.rmtree(dest / part)
            shutil.copytree(pkg / part, dest / part)
        shutil.copy2(stub, dest / "backends" / "python" / "triton_python_backend_stub")
        marker.write_text(str(pkg))
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    return TritonInstall(dest / "bin" / "tritonserver", dest / "backends", (libs,))


def external_triton(binary: str | Path) -> TritonInstall:
    b = Path(binary)
    if not b.exists():
        raise ServerStartError(f"tritonserver binary {b} does not exist")
    return TritonInstall(b, b.resolve().parent.parent / "backends")


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
    """A running tritonserver. Use as a context manager, or call ``start``/``stop``."""

    def __init__(
        self,
        repo: str | Path,
        ports: Ports | None = None,
        host: str = "127.0.0.1",
        install: TritonInstall | None = None,
        log_file: str | Path | None = None,
        exit_timeout_s: int = 30,
        extra_args: tuple[str, ...] = (),
        http_body_limit: int | None = DEFAULT_MAX_BODY,
        serve_config=None,
    ):
        """``serve_config``: the ``ServeConfig`` the repository was rendered from; with it (and the HTTP guard)
        the OpenAI-compatible API is served on the HTTP port too."""
        self.repo = Path(repo)
        self.ports = ports or Ports.free()
        self.host = host
        self.install = install
        self.log_file = Path(log_file) if log_file else self.repo.parent / "tritonserver.log"
        self.exit_timeout_s = exit_timeout_s
        self.extra_args = extra_args
        self.proc: subprocess.Popen | None = None
        # with a body limit, tritonserver's HTTP moves to an internal loopback port behind the guard
        self.http_body_limit = http_body_limit
        self._triton_http_port = free_port() if http_body_limit else self.ports.http
        self._guard: HttpGuard | None = None
        self.serve_config = serve_config

    def command(self) -> list[str]:
        inst = self.install
        return [
            str(inst.binary),
            f"--model-repository={self.repo}",
            f"--backend-directory={inst.backend_dir}",
            f"--http-address={'127.0.0.1' if self.http_body_limit else self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self._triton_http_port}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            "--model-control-mode=none",  # clients cannot load or unload models
            f"--exit-timeout-secs={self.exit_timeout_s}",
            "--allow-metrics=true",
            "--metrics-interval-ms=100",
            "--log-verbose=0",
            *self.extra_args,
        ]

    def mpi_command(self, world_size: int) -> list[str]:
        """Multi-GPU: one tritonserver per rank under mpirun, as tensorrtllm_backend's launcher does;
        only rank 0 opens the HTTP/gRPC/metrics ports. (Generated here; run only on a GPU machine.)"""
        base = self.command()
        out = ["mpirun", "--allow-run-as-root"]
        for rank in range(world_size):
            args = [a for a in base if rank == 0 or not a.startswith(("--http-", "--grpc-", "--metrics-"))]
            if rank:
                args += ["--allow-http=false", "--allow-grpc=false", "--allow-metrics=false"]
            args += ["--disable-auto-complete-config", f"--backend-config=python,shm-region-prefix-name=prefix{rank}_"]
            out += ["-n", "1", *args, ":"]
        return out[:-1]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        libs = [str(p) for p in self.install.lib_dirs] + [libdir]
        env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")]).strip(":")
        # the python backend stub must find this environment's interpreter and packages
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = ":".join([root, env.get("PYTHONPATH", "")]).strip(":")
        env[GRPC_URL_ENV] = self.grpc_url  # the front door calls the engine through this server's gRPC endpoint
        return env

    def start(self, ready_timeout_s: float = 180.0) -> "TritonServer":
        if self.install is None:
            self.install = bundled_triton()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
        )
        log.close()
        try:
            if self.http_body_limit:
                self._guard = HttpGuard(self.host, self.ports.http, self._triton_http_port, self.http_body_limit,
                                        extensions=self._guard_extensions()).start()
            self.wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _guard_extensions(self) -> list:
        if self.serve_config is None:
            return []
        from .openai_server import OpenAIServer

        return [OpenAIServer(self.serve_config.resolved(), self.grpc_url, f"http://127.0.0.1:{self._triton_http_port}")]

    @property
    def openai_url(self) -> str | None:
        """The OpenAI-compatible API's base URL (``…/v1``), when it is served."""
        return f"http://{self.http_url}/v1" if self.serve_config is not None and self.http_body_limit else None

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerStartError(
                    f"tritonserver exited with code {self.proc.returncode}; last log lines:\n{self.log_tail()}"
                )
            if self.is_ready():
                return
            time.sleep(0.2)
        raise ServerStartError(f"tritonserver not ready after {timeout_s:.0f}s; last log lines:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, wait for the exit timeout (plus margin), then kill the whole process group."""
        if self.proc is None:
            return None
        if self._guard is not None:
            self._guard.stop()
            self._guard = None
        timeout_s = self.exit_timeout_s + 10 if timeout_s is None else timeout_s
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # no stub process may outlive the server
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> "TritonServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


class ServeProcess(_Endpoints):
    """``ziya-trt serve`` for a ``ServeConfig``, in a process of its own (its launcher, HTTP guard and OpenAI
    API do not share a GIL with the caller: what a benchmark needs). Same URLs as ``TritonServer``."""

    def __init__(self, cfg, run_dir: str | Path, ports: Ports | None = None, host: str = "127.0.0.1",
                 exit_timeout_s: int = 30):
        self.cfg, self.run_dir, self.ports = cfg, Path(run_dir), ports or Ports.free()
        self.host, self.exit_timeout_s = host, exit_timeout_s
        self.log_file = self.run_dir / "serve.log"
        self.proc: subprocess.Popen | None = None

    @property
    def openai_url(self) -> str:
        return f"http://{self.http_url}/v1"

    def start(self, ready_timeout_s: float = 180.0) -> "ServeProcess":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg_file = self.cfg.write(self.run_dir / "serve_config.json")
        cmd = [sys.executable, "-m", "ziya_trt.cli", "serve", "--config", str(cfg_file), "--host", self.host,
               "--http-port", str(self.ports.http), "--grpc-port", str(self.ports.grpc),
               "--metrics-port", str(self.ports.metrics), "--repo-dir", str(self.run_dir / "repo"),
               "--log-file", str(self.run_dir / "tritonserver.log"), "--exit-timeout", str(self.exit_timeout_s)]
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
