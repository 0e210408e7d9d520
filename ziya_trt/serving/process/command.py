"""tritonserver's command line and environment (``TritonLaunch``): plain data from a server's facts, built on
the launcher's thread that spawns it (at start and at every restart). ``multi_gpu`` turns the command into
mpirun's."""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..engine_link import GRPC_URL_ENV
from ..http.checks import ADMIN_HEADER, RESTRICTED_APIS
from .endpoints import Ports
from .install import TritonInstall

_ROOT = Path(__file__).resolve().parents[3]  # the checkout: model_repo/'s adapters import ziya_trt from it


@dataclass(frozen=True)
class TritonLaunch:
    install: TritonInstall
    repo: Path
    host: str  # where gRPC and metrics listen
    http_address: str  # where tritonserver's own HTTP listens: loopback, behind the HTTP guard
    http_port: int
    ports: Ports
    key_marker: str  # in the operator key's place on the command line (``secret_arg.py``)
    shm_prefix: str  # the Python backend's shared-memory regions (``spawn.shm_prefix``)
    exit_timeout_s: int
    grpc_url: str  # where the front door calls the engine: this server's own gRPC endpoint
    extra_args: tuple[str, ...] = ()

    def command(self) -> list[str]:
        inst = self.install
        restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self.key_marker}"
        return [
            str(inst.binary),
            f"--model-repository={self.repo}",
            f"--backend-directory={inst.backend_dir}",
            f"--http-address={self.http_address}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--http-port={self.http_port}",
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
        env["PYTHONPATH"] = ":".join([str(_ROOT), env.get("PYTHONPATH", "")]).strip(":")
        env[GRPC_URL_ENV] = self.grpc_url
        return env
