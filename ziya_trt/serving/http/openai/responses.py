"""OpenAI's response bodies and headers that are not a completion's own: JSON responses, errors from the one error
table, ``X-Request-Id``, the usage block (on the guard's event loop, like ``server``)."""

from __future__ import annotations

import json
import uuid

from ....errors import ZiyaError, retry_headers
from ...session import TextSession
from . import schema

REQUEST_ID = "X-Request-Id"
_REQUEST_ID_MAX = 256


def usage(sessions: list[TextSession]) -> dict:
    """One response's usage, as OpenAI counts it: each prompt once, the completion tokens of every choice."""
    n_in = sum(len(s.job.input_ids) for s in sessions)
    n_out = sum(s.n_output for s in sessions)
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out,
            "prompt_tokens_details": {"cached_tokens": sum(s.job.cached_tokens for s in sessions)}}



async def request_id(request, response) -> None:
    """Every response of the API carries ``X-Request-Id``: the client's own (printable ASCII, at most 256 characters),
    or a new one (aiohttp's ``on_response_prepare``: streamed responses too, before their headers go out)."""
    if not (request.path.startswith("/v1/") or request.path == "/health"):
        return
    rid = request.headers.get(REQUEST_ID, "")
    if not (0 < len(rid) <= _REQUEST_ID_MAX and rid.isascii() and rid.isprintable()):
        rid = uuid.uuid4().hex
    response.headers[REQUEST_ID] = rid


def model_not_found(name: str, served):
    return json_response(404, schema.error_body(f"The model '{name}' does not exist; served: {', '.join(served)}",
                                        "invalid_request_error", "model", "model_not_found"))


def json_response(status: int, body: dict, headers: dict | None = None):
    from aiohttp import web

    return web.json_response(body, status=status, dumps=lambda d: json.dumps(d, ensure_ascii=False), headers=headers)


def error_response(err: ZiyaError):
    """An error response from the one error table: status, OpenAI's body, ``Retry-After`` where a retry may pass."""
    return json_response(*schema.openai_error(err), headers=retry_headers(err))


