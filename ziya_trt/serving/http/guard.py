"""The public HTTP port: a front for tritonserver that bounds what a client can send, and serves the
OpenAI-compatible API beside it (``extensions``).

tritonserver 2.51's own HTTP server crashes on bodies of a few MB and on deeply nested JSON, wraps
integers silently, and opens its control APIs to everyone (``checks``), so the launcher moves it to an
internal loopback port and puts this guard on the public one. Its limits are middleware around every route
(the OpenAI API's included). For every request it:
- bounds connections (``connections``): at most ``max_connections`` open; a connection must send a whole request
  within ``header_timeout_s`` of opening or of its last response, so idle and trickling sockets are closed;
- bounds bodies: ``max_body`` bytes each, and ``body_budget`` bytes being read at once in all
  (``HttpLimits``, part of the ``ServeConfig``: ``serving/limits.py``);
- refuses encoded paths, JSON nested deeper than 64, and numbers that do not fit their tensor;
- keeps the control, memory, statistics and model-config APIs for requests with the operator's key
  (``ziya-admin-key`` header; tritonserver checks the same key itself);
- answers 503 ``[ziya:shutting_down]`` while the launcher restarts or drains the server.
Every other route is passed through to tritonserver (``passthrough``).
"""

from __future__ import annotations

import asyncio
import threading
import time

from ...errors import BodyTooLargeError, InvalidRequestError, ServerOverloadedError, ServerShuttingDownError, ZiyaError
from ..limits import DEFAULT_MAX_BODY, HttpLimits
from . import checks
from .connections import Connections
from .passthrough import PassThrough, error_response



class HttpGuard:
    """``extensions``: objects with ``async setup(app, session, guard)`` (add routes; runs on the guard's loop
    before the pass-through route) and ``async cleanup()``, such as the OpenAI server. ``specs``: the input
    tensors of each model, by name, for checking ``generate`` bodies."""

    def __init__(self, host: str, port: int, upstream_port: int, limits: HttpLimits = HttpLimits(),
                 extensions=(), admin_key: str | None = None, specs: dict | None = None):
        self.host, self.port, self.upstream = host, port, f"http://127.0.0.1:{upstream_port}"
        self.max_body, self.body_budget = limits.max_body_bytes, limits.body_budget_bytes
        self.extensions, self.admin_key, self.specs = tuple(extensions), admin_key, dict(specs or {})
        self.header_timeout_s = limits.header_timeout_s
        self.connections = Connections(limits.max_connections or max(64, open_files_limit() - 256),
                                       limits.header_timeout_s)
        # why the server cannot serve now (restarting, draining), or None: read on the guard's loop, changed there
        # (``set_unavailable``)
        self.unavailable: str | None = None
        self._body_bytes = 0  # being read, all requests together
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> "HttpGuard":
        self._thread = threading.Thread(target=self._run, name="http-guard", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        return self

    @property
    def max_connections(self) -> int:
        return self.connections.max_connections

    def set_unavailable(self, why: str | None) -> None:
        """From any thread (the supervisor's): the change is made on the guard's loop, ahead of every request
        that loop has not begun to handle; before the loop runs or after it stopped, here and now."""
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                loop.call_soon_threadsafe(setattr, self, "unavailable", why)
                return
            except RuntimeError:  # the loop closed meanwhile
                pass
        self.unavailable = why

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop_event.set)
            self._thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._stop_event = asyncio.Event()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # reported to start()
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        import aiohttp
        from aiohttp import web

        # no idle keep-alive connections upstream (tritonserver waits for them at shutdown), and no cap on
        # how many are open at once (aiohttp's default of 100 would make the 101st request wait)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                              connector=aiohttp.TCPConnector(force_close=True, limit=0),
                                              auto_decompress=False)
        @web.middleware
        async def middleware(request, handler):
            return await self._checked(request, handler)

        app = web.Application(client_max_size=self.max_body + 1, middlewares=[middleware])
        for ext in self.extensions:
            await ext.setup(app, self.session, self)
        app.router.add_route("*", "/{tail:.*}", PassThrough(self).handle)
        # a client that disconnects cancels its handler: the upstream request, or an engine call, ends with it
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        server = await self._loop.create_server(self.connections.protocol(runner.server), self.host, self.port,
                                                reuse_address=True, backlog=1024)
        reaper = asyncio.ensure_future(self.connections.reap())
        self._ready.set()
        await self._stop_event.wait()
        reaper.cancel()
        server.close()
        await runner.cleanup()
        for ext in self.extensions:
            await ext.cleanup()
        await self.session.close()

    # --- every request ---------------------------------------------------------------------------------
    def _admin(self, request) -> bool:
        return self.admin_key is not None and request.headers.get(checks.ADMIN_HEADER) == self.admin_key

    async def _checked(self, request, handler):
        conn = self.connections.of(request)
        if conn is not None:
            conn.busy += 1
        try:
            checks.check_path(request.raw_path)
            if checks.is_restricted(request.path) and not self._admin(request):
                return error_response(InvalidRequestError(
                    f"path: {request.path} is for the operator (the {checks.ADMIN_HEADER} header)", "path"), request,
                    status=403)
            if self.unavailable and not request.path.startswith("/v2/health") and request.path != "/health":
                return error_response(ServerShuttingDownError(f"the server is {self.unavailable}; retry later"), request)
            return await handler(request)
        except ZiyaError as e:
            return error_response(e, request)
        finally:
            if conn is not None:
                conn.busy -= 1
                conn.idle_since = time.monotonic()

    async def read_body(self, request) -> bytes:
        """The request's body within the size limit and the shared budget, and not nested too deep."""
        n = request.content_length
        if n is not None and n > self.max_body:
            raise BodyTooLargeError(n, self.max_body)
        if self._body_bytes + (n or 0) > self.body_budget:
            raise ServerOverloadedError("request bodies: too many being received at once; retry later")
        body, counted = bytearray(), 0
        try:
            async with asyncio.timeout(self.header_timeout_s):  # a stalled body is a stalled request
                async for chunk in request.content.iter_any():
                    body += chunk
                    self._body_bytes += len(chunk)
                    counted += len(chunk)
                    if len(body) > self.max_body:
                        raise BodyTooLargeError(len(body), self.max_body)
                    if self._body_bytes > self.body_budget:
                        raise ServerOverloadedError("request bodies: too many being received at once; retry later")
        except TimeoutError:
            raise InvalidRequestError(f"request body: not received within {self.header_timeout_s:g} s", "body") from None
        finally:
            self._body_bytes -= counted
        body = bytes(body)
        if checks.json_depth_over(body):
            raise InvalidRequestError(f"request body: JSON nested deeper than {checks.MAX_JSON_DEPTH} levels", "body")
        return body

def open_files_limit() -> int:
    """This process's open-files limit (its soft one): every connection is a file."""
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


__all__ = ["DEFAULT_MAX_BODY", "HttpGuard"]
