"""The OpenAI-compatible HTTP API, served beside ``/v2`` on the public HTTP port (by the HTTP guard).

``POST /v1/chat/completions`` and ``POST /v1/completions`` (streaming as server-sent events, or not),
``GET /v1/models``, and ``GET /health`` for load balancers.

A request is validated (``openai_schema``), formatted and tokenised with the same ``FrontDoor`` and
``TextJob`` as the text front door (the served model's template, history truncation, the safe encoding
that keeps user content from becoming a role marker), and sent straight to the engine model over the
server's own gRPC endpoint, on the guard's event loop, so no extra process handles its tokens. A client
that disconnects cancels its handler (aiohttp's handler cancellation), which stops the engine request.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

from ....errors import (InvalidRequestError, ServerError, ServerShuttingDownError, ZiyaError,
                      from_wire, retry_headers, typed)
from ....text.prompt import Conversation
from ....wire.arrays import engine_inputs, reused_blocks, stop_request_inputs
from ....wire.tensors import FRONT_DOOR_ENGINE_OUTPUTS
from . import schema
from ...engine_link import EngineLink
from ...admission import LocalBudget, refusal
from ...frontdoor import FrontDoor, TextJob, TextRequest
from ..checks import parse_json
from ...request_metrics import PromRequestMetrics, RequestOutcome

_REASON = {"eos": "stop", "stop": "stop", "length": "length"}  # OpenAI's finish reasons
TOKENIZE_INLINE_BYTES = 8 * 1024  # a body this small tokenises in well under a millisecond: on the event loop


class OpenAIServer:
    def __init__(self, cfg, grpc_url: str, upstream: str, budget=None):
        """``cfg`` is the ``ServeConfig``; ``grpc_url`` the server's gRPC address; ``upstream`` tritonserver's HTTP;
        ``budget`` the admission budget it shares with the front doors (``admission``; default: one of its own)."""
        self.cfg, self.upstream = cfg, upstream
        self.door = FrontDoor.from_config(cfg)
        self.models = tuple(cfg.front_door_names)
        self.link = EngineLink(grpc_url, cfg.engine_name, FRONT_DOOR_ENGINE_OUTPUTS, name="openai")
        self.budget = budget or LocalBudget(cfg.admission_budget)
        # tokenising and truncating large requests, off the event loop (at most two at once: 2 cores here)
        self._tokenizing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="openai-tokenize")
        self.created = int(time.time())
        self.metrics = PromRequestMetrics({"model": self.models[0], "api": "openai"})

    # --- the guard's extension hooks (on its event loop) ---------------------------------------------
    async def setup(self, app, session, guard) -> None:
        self.session, self.guard = session, guard
        self.metrics.registry.register(_GuardCollector(guard))  # the HTTP port's own counters, on its /metrics
        await self.link.start_on_running_loop()
        r = app.router
        r.add_post("/v1/chat/completions", self.chat_completions)
        r.add_post("/v1/completions", self.completions)
        r.add_get("/v1/models", self.list_models)
        r.add_get("/health", self.health)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/metrics", self.prometheus)
        r.add_route("*", "/v1/{tail:.*}", self.not_found)

    async def cleanup(self) -> None:
        await self.link.aclose()
        self._tokenizing.shutdown(wait=False, cancel_futures=True)

    # --- routes ------------------------------------------------------------------------------------
    async def chat_completions(self, request):
        return await self._handle(request, schema.ChatCompletionRequest, chat=True)

    async def completions(self, request):
        return await self._handle(request, schema.CompletionRequest, chat=False)

    async def list_models(self, request):
        from aiohttp import web

        data = [{"id": m, "object": "model", "created": self.created, "owned_by": "ziya-trt"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def health(self, request):
        """Ready when tritonserver and the engine model are, and the server is not draining or restarting
        (where ``/v2/health/ready`` says 503 too): a load balancer on ``/health`` sends nothing that is refused."""
        from aiohttp import web

        if self.guard.unavailable:
            return _json(503, {"status": "unavailable", "reason": self.guard.unavailable},
                         retry_headers(ServerShuttingDownError(self.guard.unavailable)))
        try:
            async with self.session.get(f"{self.upstream}/v2/models/{self.cfg.engine_name}/ready") as up:
                ok = up.status == 200
        except Exception:
            ok = False
        return web.json_response({"status": "ok" if ok else "unavailable"}, status=200 if ok else 503)

    async def prometheus(self, request):
        """The OpenAI API's own series (the models' are on the metrics port, with Triton's)."""
        from aiohttp import web

        return web.Response(body=self.metrics.exposition(), content_type="text/plain", charset="utf-8")

    async def openapi(self, request):
        from aiohttp import web

        return web.json_response(schema.openapi(self.models, self.cfg.max_seq_len))

    async def not_found(self, request):
        return _json(404, schema.error_body(f"no route {request.method} {request.path}", "invalid_request_error",
                                            None, "unknown_url"))

    # --- one request -----------------------------------------------------------------------------------
    async def _handle(self, request, model, chat: bool):
        t0 = time.monotonic()
        try:
            body = await self.guard.read_body(request)  # the size limit, the shared budget, the nesting depth
            large = len(body) > TOKENIZE_INLINE_BYTES
            req = await self._work(large, lambda: schema.parse(model, parse_json(body)))
            if req.model not in self.models:
                self.metrics.record(RequestOutcome(0.0, error="invalid"))
                return _json(404, schema.error_body(f"The model '{req.model}' does not exist; served: "
                                                    f"{', '.join(self.models)}", "invalid_request_error", "model",
                                                    "model_not_found"))
            place = self.budget.try_acquire()
            if place is None:
                raise refusal("openai", self.budget.size)
        except Exception as e:  # anything not typed is a bug: a generic error, never a traceback
            err = typed(e, "openai: could not start the request")
            self.metrics.record(RequestOutcome.failed(err))
            return _error_json(err)
        try:
            try:
                job = await self._work(large, lambda: self._job(req, chat))
            except Exception as e:
                err = typed(e, "openai: could not start the request")
                self.metrics.record(RequestOutcome.failed(err))
                return _error_json(err)
            if req.stream:
                return await self._stream(request, req, job, chat, t0)
            return await self._whole(req, job, chat, t0)
        finally:
            place.release()

    async def _work(self, large: bool, fn):
        """``fn()`` on the event loop for a small request; a large one's parsing, tokenising and truncating take long:
        never on the loop that serves every client, but on the tokenising pool."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizing, fn) if large else fn()

    def _outcome(self, job: TextJob, t0: float, t_first: float | None, err: ZiyaError | None = None) -> None:
        now = time.monotonic()
        if err is not None:
            self.metrics.record(RequestOutcome.failed(err, now - t0))
        else:
            self.metrics.record(RequestOutcome(now - t0, len(job.input_ids), job.n_output,
                                               (t_first or now) - t0, job.finish_reason.value,
                                               cached_tokens=job.cached_tokens))

    def _job(self, req, chat: bool) -> TextJob:
        if chat:
            conv = Conversation.from_messages(req.conversation_messages())
            text, trusted = None, True
        else:
            conv, text, trusted = None, req.prompt_text(), False  # a completion's prompt is user text too
            if not text.strip():
                raise InvalidRequestError("prompt: empty prompt", "prompt")
        wanted = req.requested_max_tokens()
        params = req.sampling(wanted if wanted is not None else schema.CARD.max_new_tokens)
        # left out, max_tokens is the card's 512, or as many as fit beside the prompt
        return TextJob(self.door, TextRequest(text=text, messages=conv, params=params, stream=True,
                                              exclude_input=not getattr(req, "echo", False), trusted=trusted,
                                              fit_max_tokens=wanted is None))

    async def _events(self, job: TextJob) -> AsyncIterator[tuple[str, bool]]:
        """The engine call: (text, final) as it comes; stops the engine if the caller leaves early. Responses
        that piled up while the loop was busy are merged into one (as the front door's outbox does)."""
        queue: asyncio.Queue = asyncio.Queue()
        self.link.submit(job.id, engine_inputs(job.engine_request), lambda o, e, f: queue.put_nowait((o, e, f)))
        done = False
        try:
            while not done:
                outputs, error, done = await queue.get()
                tokens = _ids(outputs)
                job.reused_blocks = max(job.reused_blocks, reused_blocks(outputs))
                while error is None and not done and not queue.empty():
                    outputs, error, done = queue.get_nowait()
                    tokens += _ids(outputs)
                    job.reused_blocks = max(job.reused_blocks, reused_blocks(outputs))
                if error is not None:
                    raise from_wire(error) or ServerError(f"{self.cfg.engine_name}: {error}")
                text, stop = job.push(tokens)
                if stop:
                    self.link.stop(job.id, stop_request_inputs())
                if done:
                    text += job.finish()
                if text or done:
                    yield text, done
        finally:
            if not done:  # cancelled (the client left) or failed: free the engine's slot
                job.cancel()
                self.link.stop(job.id, stop_request_inputs())

    def _usage(self, job: TextJob) -> dict:
        n_in, n_out = len(job.input_ids), job.n_output
        return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out,
                "prompt_tokens_details": {"cached_tokens": job.cached_tokens}}

    async def _whole(self, req, job: TextJob, chat: bool, t0: float):
        parts = []
        try:
            async for text, _ in self._events(job):
                parts.append(text)
        except ZiyaError as e:
            self._outcome(job, t0, None, e)
            return _error_json(e)
        self._outcome(job, t0, None)
        reason = _REASON.get(job.finish_reason.value, "stop")
        rid = _id(chat)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": "".join(parts)}, "logprobs": None,
                      "finish_reason": reason}
        else:
            choice = {"index": 0, "text": "".join(parts), "logprobs": None, "finish_reason": reason}
        return _json(200, {"id": rid, "object": "chat.completion" if chat else "text_completion",
                           "created": int(time.time()), "model": req.model, "choices": [choice],
                           "usage": self._usage(job)})

    async def _stream(self, request, req, job: TextJob, chat: bool, t0: float):
        from aiohttp import web

        events = self._events(job)
        try:  # the engine's first answer comes before the headers: a refusal (a full queue) is still a status code
            first = [await anext(events)]
        except StopAsyncIteration:
            first = []
        except ZiyaError as e:
            self._outcome(job, t0, None, e)
            return _error_json(e)
        except asyncio.CancelledError:  # the client left while the request waited for a slot
            self.metrics.record(RequestOutcome(time.monotonic() - t0, finish_reason="cancelled"))
            raise
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        usage = req.stream_options is not None and req.stream_options.include_usage
        head = {"id": _id(chat), "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": req.model}
        if usage:
            head["usage"] = None

        def chunk(text: str | None, reason: str | None, role: bool = False) -> bytes:
            if chat:
                delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": reason}
            return _sse(head | {"choices": [choice]})

        # the per-token chunk, chunk(text, None), with only its text encoded each time
        before = ("data: " + json.dumps(head, ensure_ascii=False)[:-1] + ', "choices": [{"index": 0, '
                  + ('"delta": {"content": ' if chat else '"text": ')).encode("utf-8")
        after = (("}" if chat else "") + ', "logprobs": null, "finish_reason": null}]}\n\n').encode("utf-8")

        def text_chunk(text: str) -> bytes:
            return before + json.dumps(text, ensure_ascii=False).encode("utf-8") + after

        t_first = None
        try:
            if chat:
                await resp.write(chunk(None, None, role=True))
            async for text, final in _chain(first, events):
                if text:
                    await resp.write(text_chunk(text))
                    t_first = t_first or time.monotonic()
                if final:
                    await resp.write(chunk(None, _REASON.get(job.finish_reason.value, "stop")))
            if usage:
                await resp.write(_sse(head | {"choices": [], "usage": self._usage(job)}))
        except ZiyaError as e:  # after the headers went out, the error goes in-band, as OpenAI does
            self._outcome(job, t0, t_first, e)
            await resp.write(_sse(schema.openai_error(e)[1]))
        except (ConnectionError, asyncio.CancelledError) as e:  # the client left: closing _events stops the engine
            self.metrics.record(RequestOutcome(time.monotonic() - t0, finish_reason="cancelled"))
            if isinstance(e, asyncio.CancelledError):
                raise
            return resp
        else:
            self._outcome(job, t0, t_first)
        finally:
            await events.aclose()
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


class _GuardCollector:
    """The HTTP guard's connection counters as Prometheus counters (read when /metrics is scraped)."""

    HELP = {"refused_connections": "connections closed at once: the HTTP port had its most open",
            "timed_out_connections": "connections closed for sending no whole request in time (idle or trickling)"}

    def __init__(self, guard):
        self.guard = guard

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        for key, help_ in self.HELP.items():
            yield CounterMetricFamily(f"ziya_http_{key}", help_, value=self.guard.counters[key])


async def _chain(first: list, rest: AsyncIterator):
    for item in first:
        yield item
    async for item in rest:
        yield item


def _ids(outputs: dict) -> list[int]:
    ids = outputs.get("output_ids")
    return ids.reshape(-1).tolist() if ids is not None else []


def _id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex


def _json(status: int, body: dict, headers: dict | None = None):
    from aiohttp import web

    return web.json_response(body, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False), headers=headers)


def _error_json(err: ZiyaError):
    """An error response from the one error table: status, OpenAI's body, ``Retry-After`` where a retry may pass."""
    return _json(*schema.openai_error(err), headers=retry_headers(err))


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"
