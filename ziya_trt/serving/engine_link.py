"""The text front door's link to the engine model: calls over the server's own gRPC endpoint.

Why not BLS: in Triton's Python backend a decoupled BLS call (``exec(decoupled=True)``) returns only
once the engine's first response is in, and the stub's locking around BLS response iterators can
deadlock a model that reads many streams while starting new ones (docs/python-backend.md). Over
gRPC there is no such lock, and the engine model sees an ordinary streaming client.

Each engine call is its own bidirectional ``ModelStreamInfer`` stream on one channel, all driven by
one asyncio loop on the link's thread: a stream shared by every call would put all responses in one
queue, where a new request's first token waits behind everyone's. A TensorRT-LLM ``stop`` request
for a call (same id) goes on a short stream of its own, once the engine has answered the call, so it
cannot overtake the request it stops.

The link runs its calls on a thread and event loop of its own (the front door), or on an event loop
that is already running (``start_on_running_loop``: the OpenAI server, whose handlers then receive
events on their own loop). Callbacks run on the link's loop and must not block. Nothing here imports
Triton's Python backend, so the link is tested against a real server from an ordinary process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Callable

import numpy as np

from ..errors import ServerShuttingDownError, is_triton_queue_full
from ..wire.grpc import infer_request, is_final, is_host_port, response_arrays

log = logging.getLogger(__name__)

GRPC_URL_ENV = "ZIYA_TRT_GRPC_URL"  # how the launcher tells the front door the server's gRPC address
# (outputs, error message, final): outputs is {name: array}, empty for an error or a bare final
OnEvent = Callable[[dict, "str | None", bool], None]


class LinkClosedError(ServerShuttingDownError):
    """The link is closed: the front door is being unloaded."""


BUSY_RETRIES, BUSY_BACKOFF_S = 3, 0.005  # a refusal by Triton's own queue: up to 3 more tries, 5, 10, 20 ms apart


def _busy(call: "_Call", resp) -> bool:
    """Whether the engine call's first answer is Triton's own queue refusal (no engine has seen the request)."""
    return not call.started.done() and is_triton_queue_full(resp.error_message)


class _Call:
    __slots__ = ("id", "on_event", "stopped", "grpc", "started")

    def __init__(self, request_id: str, on_event: OnEvent):
        self.id, self.on_event = request_id, on_event
        self.stopped = False
        self.grpc = None  # the stream, once the loop has opened it
        self.started: asyncio.Future | None = None  # the engine has answered: a stop may follow


class EngineLink:
    """Engine calls over the server's own gRPC endpoint; ``submit``/``stop``/``close`` are thread-safe."""

    def __init__(self, url: str, model: str, outputs=("output_ids", "sequence_length"), name: str = "engine-link"):
        if not is_host_port(url):
            raise ValueError(f"engine link: {url!r} is not a host:port gRPC address")
        self.url, self.model, self.outputs, self.name = url, model, tuple(outputs), name
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None  # the thread the loop runs on
        self._thread: threading.Thread | None = None  # the link's own, when it has one
        self._channel = None
        self._stub = None
        self._tasks: set[asyncio.Task] = set()  # the link thread's own
        self._closed = False

    # --- any thread ------------------------------------------------------------------------------
    def submit(self, request_id: str, arrays: dict[str, np.ndarray], on_event: OnEvent, extra_outputs=()) -> None:
        """Start an engine call; ``on_event`` gets its responses (on the link's thread), the last with final=True.
        ``extra_outputs``: outputs this call asks for beyond the link's own (a request's log probabilities)."""
        outputs = self.outputs + tuple(extra_outputs) if extra_outputs else self.outputs
        req = infer_request(self.model, request_id, arrays, outputs)
        with self._lock:
            if self._closed:
                raise LinkClosedError(f"{self.name}: the engine link is closed (the model is being unloaded)")
            if request_id in self._calls:
                raise ValueError(f"{self.name}: request id {request_id!r} is already in flight")
            self._start_loop()
            call = self._calls[request_id] = _Call(request_id, on_event)
        self._call_soon(self._open_call, call, req)

    def stop(self, request_id: str, arrays: dict[str, np.ndarray]) -> bool:
        """Send a stop request for an open call, once; False if the call is over or already stopped."""
        req = infer_request(self.model, request_id, arrays)
        with self._lock:
            call = self._calls.get(request_id)
            if call is None or call.stopped or self._closed:
                return False
            call.stopped = True
        self._call_soon(self._track, self._send_stop(call, req))
        return True

    def in_flight(self) -> int:
        with self._lock:
            return len(self._calls)

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel the calls still open (they get an error event) and stop the loop; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(self._done.set_result, None)
            thread.join(timeout_s)

    # --- on a loop that is already running -----------------------------------------------------------
    async def start_on_running_loop(self) -> None:
        """Run the calls on the running event loop: ``submit``/``stop`` from its thread cost no wake-up."""
        if self._loop is not None:
            raise RuntimeError(f"{self.name}: the link is already running")
        await self._open_channel()
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()

    async def aclose(self) -> None:
        """``close`` for a link started with ``start_on_running_loop`` (awaited on that loop)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._channel is not None:
            await self._close_channel()

    # --- the link's loop -----------------------------------------------------------------------------
    def _call_soon(self, fn, *args) -> None:
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(fn, *args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            ready = threading.Event()
            self._thread = threading.Thread(target=self._run_loop, args=(ready,), name=f"{self.name}-link", daemon=True)
            self._thread.start()
            if not ready.wait(30) or self._stub is None:
                raise LinkClosedError(f"{self.name}: the engine link's event loop did not start")
        return self._loop

    def _run_loop(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._done = loop.create_future()
        try:
            loop.run_until_complete(self._serve(loop, ready))
        finally:
            ready.set()  # never leave submit() waiting
            loop.close()

    async def _serve(self, loop, ready: threading.Event) -> None:
        await self._open_channel()
        self._loop, self._loop_thread = loop, threading.get_ident()
        ready.set()  # from inside the running loop: every call scheduled after this finds the stub
        try:
            await self._done
        finally:
            await self._close_channel()

    async def _open_channel(self) -> None:
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        opts = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._channel = grpc.aio.insecure_channel(self.url, options=opts)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def _close_channel(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        if tasks:  # each reports its call's end before the channel goes
            await asyncio.wait(tasks, timeout=2.0)
        await self._channel.close()

    def _open_call(self, call: _Call, req) -> None:
        call.grpc = self._stub.ModelStreamInfer()
        call.started = asyncio.get_running_loop().create_future()
        self._track(self._run_call(call, req))

    def _track(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_stop(self, call: _Call, req) -> None:
        """A call the engine has not answered yet (queued for a slot) is cancelled itself, so it gives its
        place back at once. Otherwise the stop goes on a stream of its own (after the answer, so it cannot
        overtake the call's request); its one empty response is read and dropped. A stop the server refuses
        (Triton's queue for the engine model is full: the template bounds it with the engine's max_queue_size,
        and a burst of stops can fill it) must not leave the call running: the call's own stream is cancelled
        then, which Triton passes on to the engine as the request's cancellation."""
        if call.grpc is not None and not call.started.done():
            call.grpc.cancel()
            return
        refused = None
        try:
            await call.started
            stream = self._stub.ModelStreamInfer()
            await stream.write(req)
            await stream.done_writing()
            async for resp in stream:
                refused = refused or resp.error_message or None
        except Exception as e:  # the call ended first, or the server is going: the call's own task reports that
            log.debug("%s: stop for %s not sent", self.name, call.id, exc_info=True)
            refused = refused or type(e).__name__
        if refused is not None and call.grpc is not None:
            log.info("%s: the stop for %s was refused (%s): cancelling the call itself", self.name, call.id, refused)
            call.grpc.cancel()  # a no-op for a call that has ended

    async def _run_call(self, call: _Call, req) -> None:
        error = None
        try:
            for attempt in range(BUSY_RETRIES + 1):
                await call.grpc.write(req)
                await call.grpc.done_writing()  # the server closes the stream after the final response
                async for resp in call.grpc:
                    if attempt < BUSY_RETRIES and _busy(call, resp):
                        break
                    if not call.started.done():
                        call.started.set_result(None)
                    if self._dispatch(call, resp):
                        return
                else:
                    break
                # Triton's own queue for the engine model was full for a moment (it holds max_queue_size requests
                # while the model is busy in execute; the fronts' budget says the engine has room): once more
                await asyncio.sleep(BUSY_BACKOFF_S * 2**attempt)
                if call.stopped:
                    raise asyncio.CancelledError
                call.grpc.cancel()  # a no-op: the refusal was its final response
                call.grpc = self._stub.ModelStreamInfer()
            error = "the stream ended before the final response"
        except asyncio.CancelledError:
            error = ("cancelled before the engine answered" if call.stopped
                     else "the link was closed (the model is being unloaded)")
        except Exception as e:  # grpc.aio.AioRpcError: the server went away or is stopping
            # the status only: gRPC's details name addresses (logged below, never sent to a client)
            code = getattr(e, "code", None)
            error = f"gRPC {code().name}" if callable(code) else type(e).__name__
            log.debug("%s: engine call %s: %s", self.name, call.id, e.details() if hasattr(e, "details") else e,
                      exc_info=True)
        finally:
            if not call.started.done():
                call.started.set_exception(LinkClosedError("no response"))
                call.started.exception()  # retrieved: no "never retrieved" warning
        call.grpc.cancel()
        if self._forget(call):
            log.warning("%s: engine call %s over %s failed: %s", self.name, call.id, self.url, error)
            call.on_event({}, f"the engine call failed: {error}", True)  # no internal address to clients

    def _forget(self, call: _Call) -> bool:
        with self._lock:
            return self._calls.pop(call.id, None) is not None

    def _dispatch(self, call: _Call, resp) -> bool:
        """Pass one response on; True when the call is over."""
        ir = resp.infer_response
        error = resp.error_message or None
        done = error is not None or is_final(ir)
        if done and not self._forget(call):
            return True  # already ended (the link is closing)
        call.on_event(response_arrays(ir) if error is None else {}, error, done)
        return done
