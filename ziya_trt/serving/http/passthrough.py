"""The pass-through to tritonserver's own HTTP port (on the guard's event loop): every request the guard's routes do
not serve, checked (strict JSON, ``generate`` bodies against their tensors), then copied through chunk by chunk,
server-sent events included. A model's refusal in tritonserver's first bytes gets its own status (429 for
overloaded, with ``Retry-After``) instead of the 400 tritonserver gives every model error. A client that
disconnects cancels its handler, which closes the upstream request, so Triton sees the cancellation.
"""

from __future__ import annotations

import json

from ...errors import InvalidRequestError, ServerShuttingDownError, ZiyaError, from_wire, kind_of, retry_headers
from . import checks
from .openai.schema import openai_error

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer",
              "proxy-authenticate", "proxy-authorization", "host"}


class PassThrough:
    """The catch-all route of ``guard`` (an ``HttpGuard``: its body reading, limits, upstream and session)."""

    def __init__(self, guard):
        self.guard = guard

    async def handle(self, request):
        """Everything else: checked, then passed through to tritonserver."""
        from aiohttp import web
        import aiohttp

        if request.path == "/v2/health/ready" and self.guard.unavailable:
            return web.Response(status=503)
        try:
            body = await self.guard.read_body(request)
            self._check_body(request, body)
        except ZiyaError as e:
            return error_response(e)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        resp = None
        # HEAD is GET without the body (tritonserver answers HEAD on its health routes as not ready)
        method = "GET" if request.method == "HEAD" else request.method
        try:
            async with self.guard.session.request(method, self.guard.upstream + request.path_qs, data=body,
                                             headers=headers) as up:
                first = await up.content.readany()
                ctype = up.headers.get("Content-Type") or ""
                if up.status >= 400 and "text/event-stream" not in ctype:
                    first += await up.content.read(_ERROR_BODY_MAX)  # an error body: small, and whole
                refused = _refusal(up.status, ctype, first)
                if refused is not None:  # tritonserver says 400 (or 200 and an error event) for every model error
                    return error_response(refused, request)
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
                return error_response(err)
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
        if target is not None and target[0] in self.guard.specs:
            checks.check_generate_body(parsed, self.guard.specs[target[0]], streaming=target[1])


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


def error_response(err: ZiyaError, request=None, status: int | None = None):
    """The guard's one error answer: Triton's error shape, or OpenAI's on the OpenAI API's paths; the status (unless
    given) and ``Retry-After`` from the one error table."""
    from aiohttp import web

    if request is not None and request.path.startswith("/v1/"):
        body = openai_error(err)[1]
    else:
        body = {"error": err.to_wire()}
    return web.json_response(body, status=status or kind_of(err).http_status, headers=retry_headers(err))
