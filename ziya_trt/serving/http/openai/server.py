"""The OpenAI-compatible HTTP API, served beside ``/v2`` on the public HTTP port (by the HTTP guard).

``POST /v1/chat/completions`` and ``POST /v1/completions`` (streaming as server-sent events, or not),
``GET /v1/models``, and ``GET /health`` for load balancers.

A request is validated (``schema``) and runs as a ``session.TextSession``, the same lifecycle as the text front
door's (the served model's template, history truncation, the safe encoding that keeps user content from becoming a
role marker, stop strings, one outcome): its engine call goes straight to the engine model over the server's own
gRPC endpoint, on the guard's event loop, so no extra process handles its tokens. This file only turns a session's
text into OpenAI's bodies and events (``chunks``), with the log probabilities of the tokens behind it for a request
that asked (``logprobs``). A client that disconnects cancels its handler (aiohttp's handler
cancellation): the session is abandoned, which stops the engine request and counts it as cancelled.

``n`` choices are one session of n sequences (one engine request, ``num_return_sequences``); a completion's list of
prompts is one session per prompt, run at once, each with its own admission places (one per choice); their choices
are indexed prompt-major and streamed interleaved, each ending with its own ``finish_reason``; the usage counts each
prompt once and every choice's tokens. A failure in one fails the response and cancels the others.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from typing import AsyncIterator

from ....engine.request import coalesce
from ....errors import AuthenticationError, InvalidRequestError, PromptTooLongError, ServerShuttingDownError, ZiyaError, retry_headers, typed
from ....text.prompt import Conversation
from ....wire.tensors import FRONT_DOOR_ENGINE_OUTPUTS
from ...admission import LocalBudget
from ...engine_link import EngineLink
from ...frontdoor import FrontDoor, TextJob, TextRequest
from ...request_metrics import PromRequestMetrics
from ...session import Sessions, TextSession
from ..checks import parse_json
from ..connections import ConnectionCollector
from ..cors import allow_cors, is_preflight
from ..engine_metrics import engine_exposition
from . import schema
from .chunks import DONE, Chunks, response_id, sse
from .logprobs import LogprobsFormat
from .responses import error_response, json_response, model_not_found, request_id, usage

_REASON = {"eos": "stop", "stop": "stop", "length": "length"}  # OpenAI's finish reasons
_METHODS = {"/v1/chat/completions": "POST", "/v1/completions": "POST", "/v1/models": "GET"}

TOKENIZE_INLINE_BYTES = 8 * 1024  # a body this small tokenises in well under a millisecond: on the event loop


def web_middleware(fn):
    """aiohttp's middleware marker, imported when the API is served (aiohttp is imported lazily here)."""
    from aiohttp import web

    return web.middleware(fn)


class OpenAIServer:
    def __init__(self, cfg, grpc_url: str, upstream: str, budget=None, api_key: str | None = None,
                 metrics_url: str | None = None):
        """``cfg`` is the ``ServeConfig``; ``grpc_url`` the server's gRPC address; ``upstream`` tritonserver's HTTP;
        ``budget`` the admission budget it shares with the front doors (``admission``; default: one of its own);
        ``api_key``: every /v1 request must carry it (``Authorization: Bearer``), as vLLM's and trtllm-serve's do;
        ``metrics_url``: tritonserver's metrics, whose engine families ``/metrics`` shows too."""
        self.cfg, self.upstream, self.api_key, self.metrics_url = cfg, upstream, api_key, metrics_url
        self.models = tuple(cfg.front_door_names)
        self.link = EngineLink(grpc_url, cfg.engine_name, FRONT_DOOR_ENGINE_OUTPUTS, name="openai")
        self.metrics = PromRequestMetrics({"model": self.models[0], "api": "openai"})
        self.sessions = Sessions(FrontDoor.from_config(cfg), self.link, budget or LocalBudget(cfg.admission_budget),
                                 self.metrics.record, "openai", cfg.engine_name)
        self.inflight = 0  # requests between their body and their last byte (the launcher's drain waits for them)
        # tokenising and truncating large requests, off the event loop (at most two at once: 2 cores here)
        self._tokenizing = ThreadPoolExecutor(max_workers=2, thread_name_prefix="openai-tokenize")
        self.created = int(time.time())

    # --- the guard's extension hooks (on its event loop) ---------------------------------------------
    async def setup(self, app, http, guard) -> None:
        """``http``: the guard's client session to tritonserver's own HTTP port."""
        self.http, self.guard = http, guard
        self.metrics.registry.register(ConnectionCollector(guard.connections))  # the HTTP port's own refusals
        await self.link.start_on_running_loop()
        r = app.router
        r.add_post("/v1/chat/completions", self.chat_completions)
        r.add_post("/v1/completions", self.completions)
        r.add_get("/v1/models", self.list_models)
        r.add_get("/v1/models/{model}", self.get_model)
        r.add_get("/health", self.health)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/metrics", self.prometheus)
        r.add_route("*", "/v1/{tail:.*}", self.not_found)
        app.on_response_prepare.append(request_id)
        if self.api_key is not None:
            app.middlewares.append(self._authenticated)
        if self.cfg.http.cors_origins:
            allow_cors(app, self.cfg.http.cors_origins)

    @web_middleware
    async def _authenticated(self, request, handler):
        """/v1 routes only with the API key (compared in constant time); /health, /metrics and Triton's /v2 without."""
        if request.path.startswith("/v1/") and not is_preflight(request):  # a browser's preflight carries no key
            given = request.headers.get("Authorization", "")
            scheme, _, key = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
                return error_response(AuthenticationError("Authorization: a valid API key is needed "
                                                          "(Authorization: Bearer <key>)"))
        return await handler(request)

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

        return web.json_response({"object": "list", "data": [self._model(m) for m in self.models]})

    async def get_model(self, request):
        from aiohttp import web

        name = request.match_info["model"]
        if name not in self.models:
            return model_not_found(name, self.models)
        return web.json_response(self._model(name))

    def _model(self, name: str) -> dict:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "ziya-trt"}

    async def health(self, request):
        """Ready when tritonserver and the engine model are, and the server is not draining or restarting
        (where ``/v2/health/ready`` says 503 too): a load balancer on ``/health`` sends nothing that is refused."""
        from aiohttp import web

        if self.guard.unavailable:
            return json_response(503, {"status": "unavailable", "reason": self.guard.unavailable},
                         retry_headers(ServerShuttingDownError(self.guard.unavailable)))
        try:
            async with self.http.get(f"{self.upstream}/v2/models/{self.cfg.engine_name}/ready") as up:
                ok = up.status == 200
        except Exception:
            ok = False
        return web.json_response({"status": "ok" if ok else "unavailable"}, status=200 if ok else 503)

    async def prometheus(self, request):
        """The OpenAI API's own series, and the engine's live figures from the metrics port (``engine_metrics``)."""
        from aiohttp import web

        engine = await engine_exposition(self.http, self.metrics_url)
        return web.Response(body=self.metrics.exposition() + engine, content_type="text/plain", charset="utf-8")

    async def openapi(self, request):
        from aiohttp import web

        return web.json_response(schema.openapi(self.models, self.cfg.max_seq_len, self.cfg.max_batch_size))

    async def not_found(self, request):
        """A path under /v1 that is not served (404), or one that is, with another method (405 and ``Allow``)."""
        allowed = _METHODS.get(request.path) or ("GET" if request.path.startswith("/v1/models/") else None)
        if allowed is not None:
            return json_response(405, schema.error_body(f"method {request.method} not allowed for {request.path}; use "
                                                f"{allowed}", "invalid_request_error", None, "method_not_allowed"),
                         {"Allow": allowed})
        return json_response(404, schema.error_body(f"no route {request.method} {request.path}", "invalid_request_error",
                                            None, "unknown_url"))

    # --- one request -----------------------------------------------------------------------------------
    async def _handle(self, request, model, chat: bool):
        self.inflight += 1
        try:
            return await self._request(request, model, chat)
        finally:
            self.inflight -= 1

    async def _request(self, request, model, chat: bool):
        t0 = time.monotonic()
        sessions: list[TextSession] = []
        try:
            body = await self.guard.read_body(request)  # the size limit, the shared budget, the nesting depth
            large = len(body) > TOKENIZE_INLINE_BYTES
            req = await self._work(large, lambda: schema.parse(model, parse_json(body)))
            if req.model not in self.models:
                self.sessions.refused(InvalidRequestError(f"model: {req.model!r} is not served", "model"))
                return model_not_found(req.model, self.models)
            if req.guide is not None and not self.cfg.guides:
                why = ("guided decoding is off on this server (--no-guided-decoding)" if self.cfg.guided_decoding is False
                       else f"the {self.cfg.engine.value} engine has no guided decoding")
                raise InvalidRequestError(f"{req.guide[1]}: structured outputs are not available: {why}", req.guide[1])
            prompts = [None] if chat else req.prompts()
            self._check_choices(req.choices, len(prompts))
            for prompt in prompts:  # each prompt its own engine request, with a place for each of its choices
                place = self.sessions.admit(req.choices)
                try:
                    sessions.append(await self._work(large, lambda p=prompt, pl=place: self.sessions.open(
                        pl, lambda door: _job(door, req, chat, p), t0)))
                except asyncio.CancelledError:  # the client left while the pool tokenised: its place goes back now
                    place.release()  # (idempotent: an open() that fails later in the pool gives it back too)
                    raise
        except BaseException as e:
            for s in sessions:  # opened before a later prompt failed: never submitted, their places go back
                s.discard()
            if not isinstance(e, Exception):
                raise
            err = typed(e, "openai: could not start the request")  # anything not typed is a bug: no traceback
            self.sessions.refused(err)
            return error_response(err)
        try:
            if req.stream:
                return await self._stream(request, req, sessions, chat)
            return await self._whole(req, sessions, chat)
        except BaseException:  # the client left (the handler is cancelled) or a bug: counted, the engine stopped
            for s in sessions:
                s.abandon()
            raise

    def _check_choices(self, n: int, prompts: int) -> None:
        """Each choice takes an engine slot: at most max_batch_size per prompt, and no more in all than the server
        admits at once."""
        cfg = self.cfg
        if n > cfg.max_batch_size:
            raise InvalidRequestError(f"n: {n} choices asked for; at most {cfg.max_batch_size} (each choice takes one of "
                                      f"the engine's max_batch_size {cfg.max_batch_size} slots)", "n")
        if n * prompts > cfg.admission_budget:
            raise InvalidRequestError(f"prompt: {prompts} prompts of {n} choices are {n * prompts} sequences, over the "
                                      f"{cfg.admission_budget} the server admits at once", "prompt")

    async def _work(self, large: bool, fn):
        """``fn()`` on the event loop for a small request; a large one's parsing, tokenising and truncating take long:
        never on the loop that serves every client, but on the tokenising pool."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizing, fn) if large else fn()

    async def _events(self, sessions: list[TextSession], n: int) -> AsyncIterator[tuple[int, str, list | None, bool]]:
        """The engine calls (one per prompt, all at once) as (choice index, text, log probabilities, whether that
        choice is complete); choice j of prompt i is ``i * n + j``. Outputs that piled up while the loop was busy are
        merged (per sequence). The log probabilities (of the tokens behind the text; None when not asked for) come
        with their text. An engine error fails its session and is raised; closing the iterator early (the client
        left, or another prompt failed) cancels every engine request still running."""
        queue: asyncio.Queue = asyncio.Queue()
        wants_lp = sessions[0].job.req.logprobs
        running: set[int] = set()
        try:
            for p, session in enumerate(sessions):
                try:
                    session.submit(lambda out, p=p: queue.put_nowait((p, out)))
                except ZiyaError as e:  # the link is closed: this one fails, those already submitted are stopped
                    session.fail(e)
                    raise
                running.add(p)
            while running:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                by_prompt: dict[int, list] = {}
                for p, out in items:
                    by_prompt.setdefault(p, []).append(out)
                for p, outs in by_prompt.items():
                    session = sessions[p]
                    for out in coalesce(outs):
                        if p not in running:
                            break
                        try:
                            choices = session.push_choices(out)
                        except ZiyaError as e:
                            session.fail(e)
                            raise
                        if out.final:
                            running.discard(p)
                        for j, text, done in choices:
                            lps = session.logprobs(j) if wants_lp else None
                            if text or done or lps:
                                yield p * n + j, text, lps, done
        finally:
            for p in running:
                sessions[p].cancel()

    async def _whole(self, req, sessions: list[TextSession], chat: bool):
        n = req.choices
        texts: dict[int, list[str]] = {}
        pairs: dict[int, list] = {}
        try:
            async for i, t, lps, _ in self._events(sessions, n):
                texts.setdefault(i, []).append(t)
                pairs.setdefault(i, []).extend(lps or ())
        except ZiyaError as e:
            for s in sessions:  # the failed one has its outcome; the others are cancelled
                s.abandon()
            return error_response(e)
        for s in sessions:
            s.finish()
        choices = []
        for p, session in enumerate(sessions):
            for j, job in enumerate(session.jobs):
                i = p * n + j
                text = "".join(texts.get(i, ()))
                reason = _REASON.get(job.finish_reason.value, "stop")
                logprobs = LogprobsFormat(self.sessions.door.tok.table, chat)(pairs.get(i, [])) if job.req.logprobs \
                    else None
                if chat:
                    choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                                    "finish_reason": reason})
                else:
                    choices.append({"index": i, "text": text, "logprobs": logprobs, "finish_reason": reason})
        return json_response(200, {"id": response_id(chat), "object": "chat.completion" if chat else "text_completion",
                           "created": int(time.time()), "model": req.model, "choices": choices,
                           "usage": usage(sessions)})

    async def _stream(self, request, req, sessions: list[TextSession], chat: bool):
        from aiohttp import web

        n = req.choices
        events = self._events(sessions, n)
        try:  # the engine's first answer comes before the headers: a refusal (a full queue) is still a status code
            first = [await anext(events)]
        except StopAsyncIteration:
            first = []
        except ZiyaError as e:
            await events.aclose()
            for s in sessions:
                s.abandon()
            return error_response(e)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        opts = req.stream_options
        with_usage = opts is not None and opts.include_usage
        every = with_usage and opts.continuous_usage_stats  # as vLLM: the usage so far in every chunk, with include_usage
        chunks, job = Chunks(chat, req.model, with_usage), sessions[0].job
        table = self.sessions.door.tok.table
        fmts = {i: LogprobsFormat(table, chat) for i in range(n * len(sessions))} if job.req.logprobs else None

        def reason(i: int) -> str:
            return _REASON.get(sessions[i // n].jobs[i % n].finish_reason.value, "stop")

        try:
            if chat:
                for i in range(n * len(sessions)):
                    await resp.write(chunks.role(i))
            async for i, text, lps, done in _chain(first, events):
                if text or lps:
                    await resp.write(chunks.text(text, usage(sessions) if every else None,
                                                 fmts[i](lps) if lps else None, index=i))
                if done:
                    await resp.write(chunks.end(reason(i), usage(sessions) if every else None, index=i))
            if with_usage:
                await resp.write(chunks.usage(usage(sessions)))
        except ZiyaError as e:  # after the headers went out, the error goes in-band, as OpenAI does
            for s in sessions:  # the failed one has its outcome; the others are cancelled
                s.abandon()
            await resp.write(sse(schema.openai_error(e)[1]))
        except ConnectionError:  # the client left: the engine is stopped, the request counted as cancelled
            for s in sessions:
                s.abandon()
            return resp
        else:
            for s in sessions:
                s.finish()
        finally:
            await events.aclose()
        await resp.write(DONE)
        await resp.write_eof()
        return resp


def _job(door: FrontDoor, req, chat: bool, prompt: str | list[int] | None) -> TextJob:
    tokens = None
    if chat:
        conv = Conversation.from_messages(req.conversation_messages(), prefill=req.prefill)
        text, trusted = None, True
    elif isinstance(prompt, list):  # the model's own token ids: no template, sent as given
        conv, text, trusted, tokens = None, None, True, tuple(prompt)
    else:
        conv, text, trusted = None, prompt, False  # a completion's prompt is user text too
        if not text.strip():
            raise InvalidRequestError("prompt: empty prompt", "prompt")
    wanted = req.requested_max_tokens()
    params = req.sampling(wanted if wanted is not None else schema.CARD.max_new_tokens)
    # left out, max_tokens is the card's 512, or as many as fit beside the prompt
    try:
        return TextJob(door, TextRequest(text=text, messages=conv, params=params, stream=req.stream,
                                         exclude_input=not getattr(req, "echo", False), trusted=trusted,
                                         fit_max_tokens=wanted is None, token_ids=tokens, n=req.choices,
                                         **req.text_options()))
    except PromptTooLongError as e:  # named as this API names the prompt
        raise PromptTooLongError(e.n_tokens, e.budget, e.what, "messages" if chat else "prompt") from None


async def _chain(first: list, rest: AsyncIterator):
    for item in first:
        yield item
    async for item in rest:
        yield item
