"""``ziya-trt serve`` for a ``ServeConfig`` as a process of its own (``ServeProcess``), started and stopped from
the caller's thread: its launcher, HTTP guard and OpenAI API then share no GIL with the caller, which is what a
benchmark needs. Same URLs as ``TritonServer``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .endpoints import Endpoints, Ports
from .install import ServerStartError
from .spawn import popen


class ServeProcess(Endpoints):
    """``ziya-trt serve --config`` on ``cfg`` (written into ``run_dir``), with its limits (``cfg.supervisor``)."""

    def __init__(self, cfg, run_dir: str | Path, ports: Ports | None = None, host: str = "127.0.0.1"):
        self.cfg, self.run_dir, self.ports = cfg, Path(run_dir), ports or Ports.free()
        self.host, self.exit_timeout_s = host, cfg.supervisor.exit_timeout_s
        self.log_file = self.run_dir / "serve.log"
        self.proc: subprocess.Popen | None = None

    @property
    def openai_url(self) -> str:
        return f"http://{self.http_url}/v1"

    def command(self, ready_timeout_s: float) -> list[str]:
        cfg_file = self.cfg.write(self.run_dir / "serve_config.json")
        return [sys.executable, "-m", "ziya_trt.cli", "serve", "--config", str(cfg_file), "--host", self.host,
                "--http-port", str(self.ports.http), "--grpc-port", str(self.ports.grpc),
                "--metrics-port", str(self.ports.metrics), "--repo-dir", str(self.run_dir / "repo"),
                "--log-file", str(self.run_dir / "tritonserver.log"),
                "--ready-timeout", str(ready_timeout_s)]  # the child waits as long as this does

    def start(self, ready_timeout_s: float | None = None) -> "ServeProcess":
        """Start it and wait for it (``ready_timeout_s``, passed on to it; default: the config's)."""
        ready_timeout_s = ready_timeout_s or self.cfg.supervisor.ready_timeout_s
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command(ready_timeout_s)
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
