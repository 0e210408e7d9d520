"""Response streams over gRPC and HTTP, sync and async. Each yields ``{name: value}`` dicts and
can be cancelled, which cancels the request on the server."""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import json
import queue
import time
import uuid

from .. import errors as E
from ..wire.grpc import is_final
from ._core import Request, as_array, map_error

_CANCELLED = object()  # the stream was cancelled here: its iterator ends


def _grpc_inputs(req: Request):
    import tritonclient.grpc as tg

    out = []
    for name, v in req.fields.items():
        arr = as_array(name, v, req.specs)
        i = tg.InferInput(name, list(arr.shape), req.specs[name].client_dtype)
        i.set_data_from_numpy(arr)
        out.append(i)
    return out


def _grpc_event(result, error) -> tuple[dict, bool]:
    """One stream callback's (result, error): (outputs, whether it was the final response); errors raise."""
    if error is not None:
        raise map_error(error) from error
    r = result.get_response()
    d = {o.name: result.as_numpy(o.name) for o in r.outputs}
    return d, is_final(r)


def _http_target(req: Request) -> tuple[str, bool]:
    """(path, streaming): Triton's generate endpoint, or generate_stream (SSE) for streaming requests."""
    stream = bool(req.fields.get("stream", req.fields.get("streaming", False)))
    return f"/v2/models/{req.model}/{'generate_stream' if stream else 'generate'}", stream


def _http_failed(status: int, content_type: str | None) -> bool:
    """An error status without an SSE body (an SSE body carries its error in-band)."""
    return status != 200 and "text/event-stream" not in (content_type or "")


def _sse_event(raw: bytes, status: int) -> dict | None:
    """One line of a generate_stream response: the event's fields, None for a non-data line; errors raise. An error
    event of a stream that began 200 has no status of its own: it is read as in-band, like a gRPC stream's."""
    line = raw.decode("utf-8").strip()
    if not line.startswith("data:"):
        return None
    d = json.loads(line[5:])
    if "error" in d:
        raise map_error(d["error"], status if status >= 400 else None)
    return d


def _retry_after(value: str | None) -> float | None:
    """An HTTP ``Retry-After`` in seconds (it is a number of seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _http_error(status: int, body: bytes, retry_after: str | None) -> E.ZiyaError:
    return map_error(_error_text(body), status, _retry_after(retry_after))


async def _within(aw, timeout_s: float):
    """``await aw`` with a timeout. ``asyncio.wait_for`` wraps every await in a new task, which costs
    the load generator measurable CPU at thousands of responses a second; ``asyncio.timeout`` does not."""
    if _timeout is None:
        return await asyncio.wait_for(aw, timeout_s)
    async with _timeout(timeout_s):
        return await aw


_timeout = getattr(asyncio, "timeout", None)  # Python 3.11+


class GrpcStream:
    """A request on its own gRPC bidirectional stream."""

    def __init__(self, url: str, req: Request, timeout_s: float):
        import tritonclient.grpc as tg

        self.timeout_s = timeout_s
        self._q: queue.Queue = queue.Queue()
        self._client = tg.InferenceServerClient(url)
        self._closed = False
        try:
            self._client.start_stream(callback=self._callback)
            self._client.async_stream_infer(req.model, _grpc_inputs(req), request_id=uuid.uuid4().hex,
                                            enable_empty_final_response=True)
        except Exception as e:
            self.close()
            try:  # the real cause (e.g. connection refused) is reported through the callback
                _, cause = self._q.get(timeout=1.0)
            except queue.Empty:
                cause = None
            raise map_error(cause or e) from (cause or e)

    def _callback(self, result, error):  # tritonclient passes these by keyword
        self._q.put((result, error))

    def __iter__(self):
        finished = False
        try:
            while True:
                try:
                    result, error = self._q.get(timeout=self.timeout_s)
                except queue.Empty:
                    raise E.APITimeoutError(f"no response within {self.timeout_s:.2f}s") from None
                if error is _CANCELLED:
                    return
                d, final = _grpc_event(result, error)
                yield d
                if final:
                    finished = True
                    return
        finally:
            self._shut(cancel=not finished)

    def _shut(self, cancel: bool) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._client.stop_stream(cancel_requests=cancel)
            finally:
                self._client.close()

    def cancel(self) -> None:
        self._shut(cancel=True)
        self._q.put((None, _CANCELLED))  # wake an iterator waiting for a response

    close = cancel


class HttpStream:
    """Triton's generate (one response) or generate_stream (SSE) endpoint; closing cancels. An error status is
    raised on opening, with the server's ``Retry-After``."""

    def __init__(self, url: str, req: Request, timeout_s: float):
        host, _, port = url.partition(":")
        self._conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout_s)
        path, self.stream = _http_target(req)
        body = json.dumps(req.fields, ensure_ascii=False).encode("utf-8")
        try:
            self._conn.request("POST", path, body, {"Content-Type": "application/json"})
            self._resp = self._conn.getresponse()
            if _http_failed(self._resp.status, self._resp.getheader("Content-Type")):
                err = _http_error(self._resp.status, self._resp.read(), self._resp.getheader("Retry-After"))
                self.close()
                raise err
        except _HTTP_FAILURES as e:
            self._conn.close()
            raise map_error(e) from e

    def __iter__(self):
        try:
            if not self.stream:
                yield json.loads(self._resp.read())
                return
            for raw in self._resp:
                d = _sse_event(raw, self._resp.status)
                if d is not None:
                    yield d
        except _HTTP_FAILURES as e:
            raise map_error(e) from e
        finally:
            self.close()

    def cancel(self) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._resp.close()
        except Exception:
            pass
        self._conn.close()


_HTTP_FAILURES = (OSError, http.client.HTTPException)  # the socket's, and a response cut short or malformed


def _error_text(body: bytes) -> str:
    try:
        return json.loads(body).get("error", body.decode("utf-8", "replace"))
    except ValueError:
        return body.decode("utf-8", "replace")


# --- async -------------------------------------------------------------------------------------


class AsyncGrpcStream:
    """One request as a bidirectional stream; on the client's shared channel when it has one."""

    def __init__(self, url: str, req: Request, timeout_s: float, shared=None):
        self.url, self.req, self.timeout_s = url, req, timeout_s
        self._it = None
        self._client = shared
        self._owns_client = shared is None

    async def __aiter__(self):
        import tritonclient.grpc.aio as tga

        if self._client is None:
            self._client = tga.InferenceServerClient(self.url)
        inputs = _grpc_inputs(self.req)

        async def one():
            yield {"model_name": self.req.model, "inputs": inputs, "request_id": uuid.uuid4().hex,
                   "enable_empty_final_response": True}

        try:
            self._it = self._client.stream_infer(one())
            agen = self._it.__aiter__()
            while True:
                try:
                    result, error = await _within(agen.__anext__(), self.timeout_s)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise E.APITimeoutError(f"no response within {self.timeout_s:.2f}s") from None
                d, final = _grpc_event(result, error)
                yield d
                if final:
                    break
            # let the server end the call itself: a call cancelled just after its final response leaves
            # tritonserver 2.51 holding the model at shutdown (it then never unloads)
            await _within(_drain(agen), self.timeout_s)
            self._it = None
        except E.ZiyaError:
            raise
        except asyncio.TimeoutError:
            raise E.APITimeoutError(f"no response within {self.timeout_s:.2f}s") from None
        except Exception as e:
            raise map_error(e) from e
        finally:
            await self.cancel()  # a no-op for a call that ended

    async def cancel(self) -> None:
        if self._it is not None:
            self._it.cancel()
            self._it = None
        if self._client is not None and self._owns_client:
            await self._client.close()
        self._client = None


async def _drain(agen) -> None:
    async for _ in agen:
        pass


class AsyncHttpStream:
    def __init__(self, url: str, req: Request, timeout_s: float, shared=None):
        self.url, self.req, self.timeout_s = url, req, timeout_s
        self._session = None

    async def __aiter__(self):
        import aiohttp

        path, stream = _http_target(self.req)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=self.timeout_s))
        try:
            async with self._session.post(f"http://{self.url}{path}", json=self.req.fields) as resp:
                if _http_failed(resp.status, resp.headers.get("Content-Type")):
                    raise _http_error(resp.status, await resp.read(), resp.headers.get("Retry-After"))
                if not stream:
                    yield json.loads(await resp.read())
                    return
                async for raw in resp.content:
                    d = _sse_event(raw, resp.status)
                    if d is not None:
                        yield d
        except E.ZiyaError:
            raise
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            raise map_error(e) from e
        finally:
            await self.cancel()

    async def cancel(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


SYNC = {"grpc": GrpcStream, "http": HttpStream}
ASYNC = {"grpc": AsyncGrpcStream, "http": AsyncHttpStream}
