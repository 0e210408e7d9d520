"""An HTTP front for tritonserver that enforces a request-body limit and passes everything else through.

tritonserver 2.51's own HTTP server crashes (SIGSEGV) on a generate body of a few MB before any model
sees it, and it has no body-size option. The launcher therefore puts this guard on the public HTTP
port and moves tritonserver's HTTP to an internal loopback port. Responses, SSE streams included, are
copied through chunk by chunk; a client that disconnects closes the upstream connection, so Triton
sees the cancellation.
"""

from __future__ import annotations

import asyncio
import threading

from ..errors import InvalidRequestError, ServerError

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer",
              "proxy-authenticate", "proxy-authorization", "host"}
DEFAULT_MAX_BODY = 1024 * 1024


class HttpGuard:
    """``extensions``: objects with ``async setup(app, session, max_body)`` (add routes; runs on the guard's loop before
    the pass-through route) and ``async cleanup()``, such as the OpenAI server."""

    def __init__(self, host: str, port: int, upstream_port: int, max_body_bytes: int = DEFAULT_MAX_BODY,
                 extensions=()):
        self.host, self.port, self.upstream = host, port, f"http://127.0.0.1:{upstream_port}"
        self.max_body = max_body_bytes
        self.extensions = tuple(extensions)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> "HttpGuard":
        self._thread = threading.Thread(target=self._run, name="http-guard", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None:
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

        # no idle keep-alive connections upstream: tritonserver waits for them at shutdown
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                              connector=aiohttp.TCPConnector(force_close=True),
                                              auto_decompress=False)
        app = web.Application(client_max_size=self.max_body + 1)
        for ext in self.extensions:
            await ext.setup(app, self._session, self.max_body)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # a client that disconnects cancels its handler: the upstream request, or an engine call, ends with it
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self._ready.set()
        await self._stop_event.wait()
        await runner.cleanup()
        for ext in self.extensions:
            await ext.cleanup()
        await self._session.close()

    def _too_big(self, n: int):
        from aiohttp import web

        err = InvalidRequestError(f"request body: {n} bytes, over the limit of {self.max_body} bytes", "body")
        return web.json_response({"error": err.to_wire()}, status=413)

    async def _handle(self, request):
        from aiohttp import web

        if request.content_length is not None and request.content_length > self.max_body:
            return self._too_big(request.content_length)
        body = bytearray()
        async for chunk in request.content.iter_any():
            body += chunk
            if len(body) > self.max_body:
                return self._too_big(len(body))
        import aiohttp

        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        resp = None
        try:
            async with self._session.request(request.method, self.upstream + request.path_qs, data=bytes(body),
                                             headers=headers) as up:
                resp = web.StreamResponse(status=up.status, reason=up.reason)
                for k, v in up.headers.items():
                    if k.lower() not in HOP_BY_HOP:
                        resp.headers[k] = v
                await resp.prepare(request)
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)  # raises once the client has gone: the upstream is then closed
                await resp.write_eof()
                return resp
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return resp  # the client went away; leaving the block closed the upstream request
        except aiohttp.ClientError:
            if resp is not None:  # tritonserver went away mid-response
                return resp
            err = ServerError("tritonserver is not reachable (starting or stopping); retry later")
            return web.json_response({"error": err.to_wire()}, status=503)
