"""``ZiyaClient`` and ``AsyncZiyaClient``: one core, two thin I/O shells."""

from __future__ import annotations

import asyncio
import random
import time
import weakref

from .. import errors as E
from ._core import TEXT, ChatResult, Core, Request
from ._transport import ASYNC, SYNC


def parse_url(url: str, protocol: str | None) -> tuple[str, str]:
    scheme, sep, rest = url.partition("://")
    if sep:
        proto = {"grpc": "grpc", "http": "http"}.get(scheme)
        if proto is None:
            raise E.InvalidRequestError(f"url: unknown scheme {scheme!r}; use grpc:// or http://", "url")
        if protocol and protocol != proto:
            raise E.InvalidRequestError(f"url: scheme {scheme} disagrees with protocol={protocol}", "url")
        return proto, rest.rstrip("/")
    proto = protocol or "grpc"
    if proto not in ("grpc", "http"):
        raise E.InvalidRequestError(f"protocol: {proto!r}; use grpc or http", "protocol")
    return proto, url.rstrip("/")


class _Base:
    def __init__(self, url: str = "grpc://127.0.0.1:8001", *, protocol: str | None = None, mode: str = TEXT,
                 model: str | None = None, tokenizer=None, template: str = "ziya", max_input_len: int | None = None,
                 reserve_tokens: int = 0, timeout_s: float = 120.0, connect_retries: int = 3, backoff_s: float = 0.25):
        self.protocol, self.url = parse_url(url, protocol)
        if isinstance(tokenizer, str):
            from ..text.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(tokenizer, require_chat_tokens=template == "ziya")
        model = model or ("ziya" if mode == TEXT else "tensorrt_llm")
        self.core = Core(mode, model, tokenizer, template, max_input_len, reserve_tokens)
        self.timeout_s, self.connect_retries, self.backoff_s = timeout_s, connect_retries, backoff_s
        self._streams: weakref.WeakSet = weakref.WeakSet()  # open streams, cancelled by close()

    def _track(self, stream):
        self._streams.add(stream)
        return stream

    def _delays(self):
        """Exponential backoff with jitter (each delay drawn from its upper half), so that clients cut off together
        do not all come back at the same instant."""
        return [self.backoff_s * (2**i) * random.uniform(0.5, 1.0) for i in range(self.connect_retries)]


# what another try may get past: a server that cannot be reached, or one draining or restarting (HTTP 503)
RETRYABLE = (E.APIConnectionError, E.ServerShuttingDownError)
MAX_RETRY_AFTER_S = 60.0  # a longer Retry-After is not waited for: the error is raised at once


def pause(err: E.ZiyaError, delay: float | None) -> float | None:
    """How long to wait before the next try, None for no next try: the backoff's delay, or longer where the server
    asked for longer (HTTP ``Retry-After``), drawn from up to a quarter above what it asked so that the clients it
    refused together do not all come back at the same instant."""
    asked = err.retry_after_s
    if delay is None or asked is None:
        return delay
    return None if asked > MAX_RETRY_AFTER_S else max(delay, asked * random.uniform(1.0, 1.25))


class _StreamState:
    """What a sync and an async stream share: the request's state and how it ends."""

    def __init__(self, core: Core, req: Request, transport):
        self.core, self.req, self._t = core, req, transport
        self._finished = False
        self.result: ChatResult | None = None

    def _step(self, d) -> tuple[str, bool]:
        """One response in: (new text, whether to stop the request now, e.g. on a stop string)."""
        return self.core.on_response(self.req, d), self.core.done(self.req)

    def _end(self) -> str:
        """The responses ended normally: the text still held back."""
        tail = self.core.on_end(self.req)
        self._finished = True
        self.result = self.core.result(self.req)
        return tail

    def _abort(self) -> bool:
        """Mark the stream cancelled; False if it had already ended."""
        if self._finished:
            return False
        self._finished = True
        self.core.on_end(self.req, cancelled=True)
        self.result = self.core.result(self.req)
        return True


class ChatStream(_StreamState):
    """Iterator of text deltas. Leaving it early (``with`` exit, ``break`` then ``close``) or calling
    ``cancel()`` cancels the request on the server."""

    def __iter__(self):
        try:
            for d in self._t:
                text, stop = self._step(d)
                if text:
                    yield text
                if stop:
                    self._t.cancel()
                    break
            if self._finished:  # cancelled while iterating
                return
            tail = self._end()
            if tail:
                yield tail
        finally:
            self.cancel()  # a no-op once ended

    def cancel(self) -> None:
        if self._abort():
            self._t.cancel()

    close = cancel

    def until_done(self) -> ChatResult:
        for _ in self:
            pass
        return self.result

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()


class ZiyaClient(_Base):
    """Blocking client. ``chat`` returns a ``ChatResult``; ``stream_chat`` a ``ChatStream``."""

    def _open(self, req: Request, retry: bool = True):
        """Open the request's stream; while the server cannot be reached or is restarting, ``connect_retries`` more
        tries."""
        for delay in [*(self._delays() if retry else ()), None]:
            try:
                return SYNC[self.protocol](self.url, req, self.timeout_s)
            except RETRYABLE as e:
                if (wait := pause(e, delay)) is None:
                    raise
                time.sleep(wait)

    def stream_chat(self, messages, history=None, **sampling) -> ChatStream:
        req = self.core.prepare(messages, history, stream=True, **sampling)
        return self._track(ChatStream(self.core, req, self._open(req)))

    def _run(self, req: Request) -> ChatResult:
        """Retry with backoff while the server cannot be reached or is restarting and nothing has been received
        (gRPC reports a refused connection only once the stream is open): 1 + ``connect_retries`` tries in all."""
        for delay in [*self._delays(), None]:
            try:
                return self._track(ChatStream(self.core, req, self._open(req, retry=False))).until_done()
            except RETRYABLE as e:
                if (wait := pause(e, delay)) is None or req.t_first is not None:
                    raise
                time.sleep(wait)

    def chat(self, messages, history=None, **sampling) -> ChatResult:
        return self._run(self.core.prepare(messages, history, stream=False, **sampling))

    def generate(self, prompt: str, stream: bool = False, **sampling):
        """A raw prompt, no template or truncation."""
        req = self.core.prepare(prompt, None, stream=stream, raw_prompt=True, **sampling)
        return self._track(ChatStream(self.core, req, self._open(req))) if stream else self._run(req)

    def is_ready(self) -> bool:
        if self.protocol == "grpc":
            import tritonclient.grpc as tg

            c = tg.InferenceServerClient(self.url)
        else:
            import tritonclient.http as th

            c = th.InferenceServerClient(self.url)
        try:
            return bool(c.is_server_ready())
        except Exception:
            return False
        finally:
            c.close()

    def close(self) -> None:
        """Cancel every stream of this client still open (each owns its connection; nothing is pooled)."""
        for s in list(self._streams):
            s.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncChatStream(_StreamState):
    """Async iterator of text deltas; ``async with`` exit or ``await cancel()`` cancels on the server."""

    async def __aiter__(self):
        try:
            async for d in self._t:
                text, stop = self._step(d)
                if text:
                    yield text
                if stop:
                    await self._t.cancel()
                    break
            tail = self._end()
            if tail:
                yield tail
        finally:
            await self.cancel()  # a no-op once ended

    async def cancel(self) -> None:
        if self._abort():
            await self._t.cancel()

    async def until_done(self) -> ChatResult:
        async for _ in self:
            pass
        return self.result

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.cancel()


class AsyncZiyaClient(_Base):
    """The asyncio client; same calls as ``ZiyaClient``, awaited. Over gRPC all requests share one
    channel (created in the running event loop); ``async with`` or ``await close()`` closes it."""

    _channel = None

    def _stream(self, req: Request):
        if self.protocol == "grpc" and self._channel is None:
            import tritonclient.grpc.aio as tga

            self._channel = tga.InferenceServerClient(self.url)
        return ASYNC[self.protocol](self.url, req, self.timeout_s, shared=self._channel)

    async def _run(self, req: Request) -> ChatResult:
        for delay in [*self._delays(), None]:
            try:
                return await self._track(AsyncChatStream(self.core, req, self._stream(req))).until_done()
            except RETRYABLE as e:
                if (wait := pause(e, delay)) is None or req.t_first is not None:
                    raise
                await asyncio.sleep(wait)

    def stream_chat(self, messages, history=None, **sampling) -> AsyncChatStream:
        req = self.core.prepare(messages, history, stream=True, **sampling)
        return self._track(AsyncChatStream(self.core, req, self._stream(req)))

    def stream_chat_raw(self, prompt: str, **sampling) -> AsyncChatStream:
        """Stream a raw prompt (no template, no truncation)."""
        req = self.core.prepare(prompt, None, stream=True, raw_prompt=True, **sampling)
        return self._track(AsyncChatStream(self.core, req, self._stream(req)))

    async def chat(self, messages, history=None, **sampling) -> ChatResult:
        return await self._run(self.core.prepare(messages, history, stream=False, **sampling))

    async def generate(self, prompt: str, **sampling) -> ChatResult:
        return await self._run(self.core.prepare(prompt, None, stream=False, raw_prompt=True, **sampling))

    async def close(self) -> None:
        """Cancel every stream of this client still open, then close the shared channel."""
        for s in list(self._streams):
            await s.cancel()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()
