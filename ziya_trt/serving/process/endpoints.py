"""Where a server started by the launcher answers: its ports (``Ports``, ``free_port``) and URLs, and whether it is
ready (``Endpoints``), for ``TritonServer`` and ``ServeProcess`` alike. Runs in the launcher's process, on the
caller's thread."""

from __future__ import annotations

import socket
import urllib.request
from dataclasses import dataclass


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


class Endpoints:
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
