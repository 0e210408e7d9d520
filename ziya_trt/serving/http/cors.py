"""Cross-origin requests to the OpenAI-compatible API (``--cors-origin``), with aio-libs' ``aiohttp_cors``: the
browser's preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered for the API's routes, and their
responses, errors included, carry ``Access-Control-Allow-Origin`` for an allowed origin only. Without the option no
CORS header is sent, so a browser keeps other sites' pages from reading the API's answers (vLLM and trtllm-serve
allow every origin by default; this server allows none unless told).

Triton's own ``/v2`` routes (passed through by the guard) stay same-origin: they are not meant for browsers."""

from __future__ import annotations

# what a browser client of the API sends beyond the simple headers, and what it may read of an answer
ALLOW_HEADERS = ("Authorization", "Content-Type", "X-Request-Id", "OpenAI-Organization", "OpenAI-Project")
EXPOSE_HEADERS = ("X-Request-Id", "Retry-After")


def is_preflight(request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def allow_cors(app, origins: tuple[str, ...]) -> None:
    """Answer ``origins`` (``*``: any) on every route of ``app`` that names its methods (the API's; a catch-all
    route for every method cannot take a preflight handler of its own). Credentials (cookies) are never allowed:
    the API's key goes in ``Authorization``, which a page sets itself."""
    import aiohttp_cors

    opts = aiohttp_cors.ResourceOptions(allow_credentials=False, allow_headers=ALLOW_HEADERS,
                                        expose_headers=EXPOSE_HEADERS, allow_methods=("GET", "POST"), max_age=600)
    cors = aiohttp_cors.setup(app, defaults={o: opts for o in origins})
    for route in list(app.router.routes()):
        if route.method != "*":
            cors.add(route)
