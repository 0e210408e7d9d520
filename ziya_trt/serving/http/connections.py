"""The HTTP port's connections, bounded (on the guard's event loop).

At most ``max_connections`` are open: past it a new connection is closed at once. A connection must send a whole
request within ``header_timeout_s`` of opening or of its last response, so idle and trickling sockets are closed.
Both refusals are counted for operators (``ConnectionCollector``: on the HTTP port's ``/metrics``).
"""

from __future__ import annotations

import asyncio
import time


class _Watched(asyncio.Protocol):
    """A connection: aiohttp's handler inside, and when it last had to answer for itself."""

    __slots__ = ("inner", "limits", "transport", "idle_since", "busy")

    def __init__(self, inner, limits: "Connections"):
        self.inner, self.limits, self.transport = inner, limits, None
        self.idle_since, self.busy = time.monotonic(), 0

    def connection_made(self, transport):
        self.transport = transport
        self.limits.live.add(self)
        self.inner.connection_made(transport)

    def connection_lost(self, exc):
        self.limits.live.discard(self)
        self.limits.open -= 1
        self.inner.connection_lost(exc)

    def data_received(self, data):
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self):
        self.inner.pause_writing()

    def resume_writing(self):
        self.inner.resume_writing()


class _Refused(asyncio.Protocol):
    """Over the connection cap: closed at once."""

    def connection_made(self, transport):
        transport.close()


class Connections:
    """The open connections of one port, and their limits; every method runs on the port's event loop."""

    def __init__(self, max_connections: int, header_timeout_s: float):
        self.max_connections, self.header_timeout_s = max_connections, header_timeout_s
        self.live: set[_Watched] = set()
        # connections accepted and not yet lost, counted when accepted: asyncio makes the protocols of a burst of
        # accepts before any of them is connected, so counting connected ones let a burst past the cap
        self.open = 0
        self._by_inner: dict = {}
        self.counters = {"refused_connections": 0, "timed_out_connections": 0}

    def protocol(self, factory):
        """A protocol factory for ``loop.create_server``: aiohttp's ``factory`` inside the limits."""
        def make():
            inner = factory()
            if self.open >= self.max_connections:
                self.counters["refused_connections"] += 1
                return _Refused()
            self.open += 1
            w = _Watched(inner, self)
            self._by_inner[inner] = w
            return w

        return make

    async def reap(self) -> None:
        """Close connections that sent no whole request within the header timeout of becoming idle (runs until
        cancelled)."""
        while True:
            await asyncio.sleep(min(1.0, self.header_timeout_s / 4))
            deadline = time.monotonic() - self.header_timeout_s
            for w in [w for w in self.live if not w.busy and w.idle_since < deadline]:
                self.counters["timed_out_connections"] += 1
                w.transport.close()
            self._by_inner = {i: w for i, w in self._by_inner.items() if w in self.live or w.transport is None}

    def of(self, request) -> _Watched | None:
        """The connection a request came on."""
        return self._by_inner.get(request.protocol)


class ConnectionCollector:
    """The connection refusals as Prometheus counters (read when ``/metrics`` is scraped)."""

    HELP = {"refused_connections": "connections closed at once: the HTTP port had its most open",
            "timed_out_connections": "connections closed for sending no whole request in time (idle or trickling)"}

    def __init__(self, connections: Connections):
        self.connections = connections

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        for key, help_ in self.HELP.items():
            yield CounterMetricFamily(f"ziya_http_{key}", help_, value=self.connections.counters[key])
