"""A lean asyncio client for an OpenAI-compatible endpoint, for the load generator: streaming chat and
completions over one aiohttp session, server-sent events read line by line, errors typed as the project's.

It has the calls the load generator uses on ``AsyncZiyaClient`` (``stream_chat``, ``stream_chat_raw``,
``close``), so one load loop drives every path. It is not the ``openai`` package on purpose: that client's
per-chunk cost (pydantic models for every event) would be measured along with the server, on the same
cores. The tests check this server against the real ``openai`` package.
"""

from __future__ import annotations

import asyncio
import json
import time

from ziya_trt import errors as E
from ziya_trt.client import ChatResult
from ziya_trt.finish import FinishReason

_REASON = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}


class OpenAIStream:
    def __init__(self, client: "AsyncOpenAIClient", path: str, body: dict):
        self.client, self.path, self.body = client, path, body
        self.result: ChatResult | None = None
        self._resp = None

    async def __aiter__(self):
        import aiohttp

        t0, t_first = time.perf_counter(), None
        parts: list[str] = []
        reason = usage = None
        try:
            async with self.client.session.post(self.client.base_url + self.path, json=self.body) as resp:
                self._resp = resp
                if resp.status != 200:
                    raise _error(resp.status, await resp.read())
                async for raw in resp.content:
                    if not raw.startswith(b"data: "):
                        continue
                    if raw.startswith(b"data: [DONE]"):
                        break
                    event = json.loads(raw[6:])
                    if "error" in event:
                        raise _error(500, raw[6:])
                    if event.get("usage"):
                        usage = event["usage"]
                    for choice in event.get("choices", ()):
                        text = choice["delta"].get("content") if "delta" in choice else choice.get("text")
                        reason = choice.get("finish_reason") or reason
                        if text:
                            t_first = t_first or time.perf_counter()
                            parts.append(text)
                            yield text
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            raise E.APIConnectionError(f"cannot reach {self.client.base_url}: {type(e).__name__}: {e}") from e
        finally:
            self._resp = None
        usage = usage or {}
        self.result = ChatResult("".join(parts), _REASON.get(reason), usage.get("prompt_tokens"),
                                 usage.get("completion_tokens"), None if t_first is None else t_first - t0,
                                 time.perf_counter() - t0,
                                 cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens"))

    async def cancel(self) -> None:
        if self._resp is not None:
            self._resp.close()


class AsyncOpenAIClient:
    def __init__(self, base_url: str, model: str, timeout_s: float = 120.0):
        self.base_url, self.model, self.timeout_s = base_url.rstrip("/"), model, timeout_s
        self._session = None

    @property
    def session(self):
        import aiohttp

        if self._session is None:  # created in the running loop; no cap on connections
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                                  timeout=aiohttp.ClientTimeout(total=None, sock_read=self.timeout_s))
        return self._session

    def _body(self, max_new_tokens: int = 512, do_sample: bool = True, seed: int | None = None,
              min_tokens: int = 0, **extra) -> dict:
        body = {"model": self.model, "stream": True, "stream_options": {"include_usage": True},
                "max_tokens": max_new_tokens}
        if not do_sample:
            body["temperature"] = 0
        if seed is not None:
            body["seed"] = seed
        if min_tokens:
            body["min_tokens"] = min_tokens  # vLLM's extension, which the server takes
        return body | extra

    def stream_chat(self, messages: str | list[dict], **sampling) -> OpenAIStream:
        """A user message, or a conversation as ``[{"role", "content"}]``."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return OpenAIStream(self, "/chat/completions", self._body(**sampling) | {"messages": list(messages)})

    def stream_chat_raw(self, prompt: str, **sampling) -> OpenAIStream:
        return OpenAIStream(self, "/completions", self._body(**sampling) | {"prompt": prompt})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _error(status: int, body: bytes) -> E.ZiyaError:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")[:300]
    typed = E.from_wire(message)
    if typed is not None:
        return typed
    if status == 429:
        return E.ServerOverloadedError(message)
    return E.InvalidRequestError(message) if 400 <= status < 500 else E.ServerError(message)
