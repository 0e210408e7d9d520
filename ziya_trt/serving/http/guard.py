"""The public HTTP port: a front for tritonserver that bounds what a client can send, and serves the
OpenAI-compatible API beside it (``extensions``).

tritonserver 2.51's own HTTP server crashes on bodies of a few MB and on deeply nested JSON, wraps
integers silently, and opens its control APIs to everyone (``request_checks``), so the launcher moves
it to an internal loopback port and puts this guard on the public one. For every request it:
- bounds connections: at most ``max_connections`` open; a connection must send a whole request within
  ``header_timeout_s`` of opening or of its last response, so idle and trickling sockets are closed;
- bounds bodies: ``max_body`` bytes each, and ``body_budget`` bytes being read at once in all
  (``HttpLimits``, part of the ``ServeConfig``: ``serving/limits.py``);
- refuses encoded paths, JSON nested deeper than 64, and numbers that do not fit their tensor;
- keeps the control, memory, statistics and model-config APIs for requests with the operator's key
  (``ziya-admin-key`` header; tritonserver checks the same key itself);
- answers 503 ``[ziya:shutting_down]`` while the launcher restarts or drains the server.
Responses, server-sent events included, are copied through chunk by chunk; a client that disconnects
cancels its handler, which closes the upstream request, so Triton sees the cancellation.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

from ...errors import (BodyTooLargeError, InvalidRequestError, ServerError, ServerOverloadedError,
                      ServerShuttingDownError, ZiyaError, from_wire, kind_of, retry_headers)
from ..limits import DEFAULT_MAX_BODY, HttpLimits
from . import checks
from .openai.schema import openai_error

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer",
              "proxy-authenticate", "proxy-authorization", "host"}


class _Watched(asyncio.Protocol):
    """A connection of the guard: aiohttp's handler inside, and when it last had to answer for itself."""

    __slots__ = ("inner", "guard", "transport", "idle_since", "busy")

    def __init__(self, inner, guard: "HttpGuard"):
        self.inner, self.guard, self.transport = inner, guard, None
        self.idle_since, self.busy = time.monotonic(), 0

    def connection_made(self, transport):
        self.transport = transport
        self.guard._conns.add(self)
        self.inner.connection_made(transport)

    def connection_lost(self, exc):
        self.guard._conns.discard(self)
        self.guard._open -= 1
        self.inner.connection_lost(exc)

    def data_received(self, data):
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self):
        self.inner.pause_writing()

    def resume_writing(self):
        self.inner.resume_writing()


class HttpGuard:
    """``extensions``: objects with ``async setup(app, session, guard)`` (add routes; runs on the guard's loop
    before the pass-through route) and ``async cleanup()``, such as the OpenAI server. ``specs``: the input
    tensors of each model, by name, for checking ``generate`` bodies."""

    def __init__(self, host: str, port: int, upstream_port: int, limits: HttpLimits = HttpLimits(),
                 extensions=(), admin_key: str | None = None, specs: dict | None = None):
        self.host, self.port, self.upstream = host, port, f"http://127.0.0.1:{upstream_port}"
        self.max_body, self.body_budget = limits.max_body_bytes, limits.body_budget_bytes
        self.extensions, self.admin_key, self.specs = tuple(extensions), admin_key, dict(specs or {})
        self.max_connections = limits.max_connections or max(64, open_files_limit() - 256)
        self.header_timeout_s = limits.header_timeout_s
        # why the server cannot serve now (restarting, draining), or None: read on the guard's loop, changed there
        # (``set_unavailable``)
        self.unavailable: str | None = None
        self._conns: set[_Watched] = set()
        # connections accepted and not yet lost, counted when accepted: asyncio makes the protocols of a burst of
        # accepts before any of them is connected, so counting connected ones let a burst past the cap
        self._open = 0
        self._by_inner: dict = {}
        self._body_bytes = 0  # being read, all requests together
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.counters = {"refused_connections": 0, "timed_out_connections": 0}

    def start(self) -> "HttpGuard":
        self._thread = threading.Thread(target=self._run, name="http-guard", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        return self

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
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                              connector=aiohttp.TCPConnector(force_close=True, limit=0),
                                              auto_decompress=False)
        @web.middleware
        async def middleware(request, handler):
            return await self._checked(request, handler)

        app = web.Application(client_max_size=self.max_body + 1, middlewares=[middleware])
        for ext in self.extensions:
            await ext.setup(app, self._session, self)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # a client that disconnects cancels its handler: the upstream request, or an engine call, ends with it
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        server = await self._loop.create_server(self._protocol(runner.server), self.host, self.port,
                                                reuse_address=True, backlog=1024)
        reaper = asyncio.ensure_future(self._reap())
        self._ready.set()
        await self._stop_event.wait()
        reaper.cancel()
        server.close()
        await runner.cleanup()
        for ext in self.extensions:
            await ext.cleanup()
        await self._session.close()

    # --- connections ---------------------------------------------------------------------------------
    def _protocol(self, factory):
        def make():
            inner = factory()
            if self._open >= self.max_connections:
                self.counters["refused_connections"] += 1
                return _Refused()
            self._open += 1
            w = _Watched(inner, self)
            self._by_inner[inner] = w
            return w

        return make

    async def _reap(self) -> None:
        """Close connections that sent no whole request within the header timeout of becoming idle."""
        while True:
            await asyncio.sleep(min(1.0, self.header_timeout_s / 4))
            deadline = time.monotonic() - self.header_timeout_s
            for w in [w for w in self._conns if not w.busy and w.idle_since < deadline]:
                self.counters["timed_out_connections"] += 1
                w.transport.close()
            self._by_inner = {i: w for i, w in self._by_inner.items() if w in self._conns or w.transport is None}

    def _conn(self, request) -> _Watched | None:
        return self._by_inner.get(request.protocol)

    # --- every request ---------------------------------------------------------------------------------
    def _admin(self, request) -> bool:
        return self.admin_key is not None and request.headers.get(checks.ADMIN_HEADER) == self.admin_key

    async def _checked(self, request, handler):
        conn = self._conn(request)
        if conn is not None:
            conn.busy += 1
        try:
            checks.check_path(request.raw_path)
            if checks.is_restricted(request.path) and not self._admin(request):
                return _error(InvalidRequestError(
                    f"path: {request.path} is for the operator (the {checks.ADMIN_HEADER} header)", "path"), request,
                    status=403)
            if self.unavailable and not request.path.startswith("/v2/health") and request.path != "/health":
                return _error(ServerShuttingDownError(f"the server is {self.unavailable}; retry later"), request)
            return await handler(request)
        except ZiyaError as e:
            return _error(e, request)
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

    async def _handle(self, request):
        """Everything else: checked, then passed through to tritonserver."""
        from aiohttp import web
        import aiohttp

        if request.path == "/v2/health/ready" and self.unavailable:
            return web.Response(status=503)
        try:
            body = await self.read_body(request)
            self._check_body(request, body)
        except ZiyaError as e:
            return _error(e)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        resp = None
        # HEAD is GET without the body (tritonserver answers HEAD on its health routes as not ready)
        method = "GET" if request.method == "HEAD" else request.method
        try:
            async with self._session.request(method, self.upstream + request.path_qs, data=body,
                                             headers=headers) as up:
                first = await up.content.readany()
                ctype = up.headers.get("Content-Type") or ""
                if up.status >= 400 and "text/event-stream" not in ctype:
                    first += await up.content.read(_ERROR_BODY_MAX)  # an error body: small, and whole
                refused = _refusal(up.status, ctype, first)
                if refused is not None:  # tritonserver says 400 (or 200 and an error event) for every model error
                    return _error(refused, request)
                resp = web.StreamResponse(status=up.status, reason=up.reason)
                for k, v in up.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        resp.headers[k] = v
                await resp.prepare(request)
                if first:
                    await resp.write(first)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)  # raises once the client has gone: the upstream is then closed
                await resp.write_eof()
                return resp
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return resp  # the client went away; leaving the block closed the upstream request
        except aiohttp.ClientError:
            err = ServerShuttingDownError("tritonserver went away (restarting or stopping); retry later")
            if resp is None:
                return _error(err)
            if "text/event-stream" in (resp.headers.get("Content-Type") or ""):  # say so in the stream
                try:
                    await resp.write(b"data: " + json.dumps({"error": err.to_wire()}).encode() + b"\n\n")
                except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                    pass
            return resp

    def _check_body(self, request, body: bytes) -> None:
        """Every body goes on only as strict JSON (tritonserver's parser takes what Python's refuses, and wraps
        numbers): its JSON part, where the binary tensor extension puts raw tensors after it; then a
        ``generate`` body's values against their tensors."""
        if not body:
            return
        head = request.headers.get("Inference-Header-Content-Length")
        if head is not None:
            if not head.isdigit() or int(head) > len(body):
                raise InvalidRequestError(f"Inference-Header-Content-Length: {head[:20]!r} is not a length within "
                                          f"the body of {len(body)} bytes", "Inference-Header-Content-Length")
            body = body[: int(head)]
        parsed = checks.parse_json(body)
        target = checks.generate_model(request.path)
        if target is not None and target[0] in self.specs:
            checks.check_generate_body(parsed, self.specs[target[0]], streaming=target[1])


_ERROR_BODY_MAX = 64 * 1024


def _refusal(status: int, ctype: str, first: bytes) -> ZiyaError | None:
    """The typed error of a model's refusal in tritonserver's first bytes: a JSON error body (``generate``, 400), or
    a stream whose first event is an error (``generate_stream``, 200), read back from its ``[ziya:]`` code. Then the
    client gets the refusal's own status (429 for overloaded, with ``Retry-After``) instead."""
    if status == 200 and "text/event-stream" in ctype:
        if not first.startswith(b'data: {"error"') or first.count(b"\n\n") != 1 or not first.endswith(b"\n\n"):
            return None
        first = first[len(b"data: "):]
    elif status < 400 or "json" not in ctype:
        return None
    try:
        message = json.loads(first)["error"]
    except (ValueError, KeyError, TypeError):
        return None
    return from_wire(message) if isinstance(message, str) else None


class _Refused(asyncio.Protocol):
    """Over the connection cap: closed at once."""

    def connection_made(self, transport):
        transport.close()


def _error(err: ZiyaError, request=None, status: int | None = None):
    """Triton's error shape, or OpenAI's on the OpenAI API's paths; the status (unless given) and ``Retry-After``
    from the one error table."""
    from aiohttp import web

    if request is not None and request.path.startswith("/v1/"):
        body = openai_error(err)[1]
    else:
        body = {"error": err.to_wire()}
    return web.json_response(body, status=status or kind_of(err).http_status, headers=retry_headers(err))


def open_files_limit() -> int:
    """This process's open-files limit (its soft one): every connection is a file."""
    import resource

    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


__all__ = ["DEFAULT_MAX_BODY", "HttpGuard", "ServerError"]
