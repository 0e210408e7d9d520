"""Serving: everything between a client and an engine, in folders by where the code runs.

Shared by every process (no I/O of their own, no Triton):
- ``config``: the typed ``ServeConfig`` (a frozen pydantic model: ``config_model``; the launcher's own limits in
  ``limits``); ``repo``: the model repository rendered from it.
- ``frontdoor``: one text request's logic (validate, format, tokenise, detokenise: ``TextJob``).
- ``engine_link``: gRPC calls to the engine model over the server's own endpoint.
- ``admission``: the one budget every front admits against; ``drain``: the shutdown signal the models read;
  ``request_metrics``: one request's outcome as metrics.

``triton/`` runs inside Triton's Python backend stub processes (the model adapters in ``model_repo/`` call it):
the front door's and the engine stand-ins' services, the outbox that sends their responses, gauges.

``http/`` runs on the launcher's event loop: the guard on the public HTTP port and the OpenAI API (``http/openai``).

``process/`` is the supervisor: tritonserver as a child process, supervision and restart, multi-GPU launch, drain
and stop, which binary runs.

docs/architecture.md shows the path of one token and of one cancellation through them.
"""
