"""The calls ``ziya-trt eval`` makes to a served engine: one non-streamed chat completion at a time over the
OpenAI-compatible API (standard library HTTP, one connection per call, so it runs from threads and needs no
optional package). Errors are the project's typed ones, from the status through the one error table.

Why chat and not completions with the formatted prompt: the API takes a completions prompt as the user's content,
so a template's markers in it (``<human>:``, ``<|im_start|>``) would be tokenised as text, never as the marker
tokens a chat request gets. The chat route formats and tokenises with ``text.prompt.encode_prompt``, the code this
side calls on the checkpoint's tokenizer, so both sides start from the same ids; the response's
``usage.prompt_tokens`` checks it. Tokens are compared by the ``bytes`` each log-probability entry carries (exact
for byte-fallback pieces, whose ``token`` string is only ``bytes:\\xNN``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from .. import errors as E

# greedy and plain: no repetition penalty (the model card's 1.05 would change the log probabilities), the server's
# top_k 1 (SamplingParams.wire_top_k) from temperature 0
GREEDY = {"temperature": 0, "repetition_penalty": 1.0}


@dataclass(frozen=True)
class Answer:
    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens: list[bytes] = field(default_factory=list)  # with logprobs: each generated token's bytes
    logprobs: list[float] = field(default_factory=list)  # and its log probability


class ChatAPI:
    """POST /v1/chat/completions on one server (``base_url`` ends in ``/v1``)."""

    def __init__(self, base_url: str, model: str = "ziya", api_key: str | None = None, timeout_s: float = 300.0):
        self.base_url = base_url.rstrip("/")
        self.model, self.api_key, self.timeout_s = model, api_key, timeout_s

    def chat(self, messages: list[dict], max_tokens: int, logprobs: bool = False) -> Answer:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, **GREEDY}
        if logprobs:
            body["logprobs"] = True
        doc = self._post("/chat/completions", body)
        choice, usage = doc["choices"][0], doc.get("usage") or {}
        entries = ((choice.get("logprobs") or {}).get("content") or []) if logprobs else []
        return Answer(text=choice["message"].get("content") or "", finish_reason=choice.get("finish_reason"),
                      prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"),
                      tokens=[bytes(e["bytes"]) for e in entries], logprobs=[float(e["logprob"]) for e in entries])

    def _post(self, path: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.base_url + path, data=json.dumps(body, ensure_ascii=False).encode(),
                                     headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise _typed(e.code, e.read()) from None
        except TimeoutError:
            raise E.APITimeoutError(f"{self.base_url}: no answer within {self.timeout_s:g}s") from None
        except (urllib.error.URLError, ConnectionError) as e:
            raise E.APIConnectionError(f"{self.base_url}: cannot reach the server ({e})") from None


def _typed(status: int, raw: bytes) -> E.ZiyaError:
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = raw[:200].decode("utf-8", "replace")
    err = E.from_status(status, message) or E.ServerError(f"HTTP {status}: {message}")
    err.status = status
    return err


def is_refusal(err: E.ZiyaError) -> bool:
    """The server refused this item for good (a 4xx other than overload or authentication): record it as
    skipped, with the reason; anything else is worth another try on a rerun."""
    status = getattr(err, "status", None)
    return status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429)
