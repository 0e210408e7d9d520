"""A client that leaves while the OpenAI API tokenises its large body on the pool: the admission place it was given
goes back at once (no server: the request's start is driven on an event loop with the tokenising held)."""

import asyncio
import json
import threading
import types
from concurrent.futures import ThreadPoolExecutor

from ziya_trt.serving.admission import LocalBudget
from ziya_trt.serving.http.openai import server as openai_server
from ziya_trt.serving.http.openai import schema
from ziya_trt.serving.session import Sessions


class Guard:
    def __init__(self, body: bytes):
        self.body = body

    async def read_body(self, request):
        return self.body


def test_the_place_goes_back_when_the_client_leaves_during_tokenising(monkeypatch):
    budget = LocalBudget(1)
    started, go = threading.Event(), threading.Event()

    def slow_job(door, req, chat, prompt):  # what tokenising a large conversation looks like to the loop: a long wait
        started.set()
        go.wait(5)
        raise RuntimeError("never used")

    monkeypatch.setattr(openai_server, "_job", slow_job)
    api = openai_server.OpenAIServer.__new__(openai_server.OpenAIServer)
    api.models = ("ziya",)
    api.cfg = types.SimpleNamespace(max_batch_size=1, admission_budget=1)
    api._tokenizing = ThreadPoolExecutor(max_workers=1)
    api.sessions = Sessions(None, None, budget, lambda outcome: None, "openai", "synthetic")
    body = json.dumps({"model": "ziya", "messages": [{"role": "user", "content": "x" * 10_000}]}).encode()
    assert len(body) > openai_server.TOKENIZE_INLINE_BYTES
    api.guard = Guard(body)

    async def go_and_leave():
        task = asyncio.ensure_future(api._request(None, schema.ChatCompletionRequest, True))
        while not started.is_set():
            await asyncio.sleep(0.01)
        assert budget.try_acquire() is None  # the request holds the one place while it is tokenised
        task.cancel()  # the client left: aiohttp cancels the handler
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(go_and_leave())
    place = budget.try_acquire()
    go.set()
    api._tokenizing.shutdown(wait=True)
    assert place is not None, "the place stayed taken after the client left"
