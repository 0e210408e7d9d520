"""Code that runs on the launcher's asyncio event loop, in the launcher's process: nothing here may block.

- ``guard``: the public HTTP port in front of tritonserver's own (connection, body and nesting limits, the
  operator's key, 503 while draining or restarting) and the pass-through to it; ``checks``: the checks it applies.
- ``openai``: the OpenAI-compatible API (routes in ``server``, request and error bodies in ``schema``).
"""
