"""Serving: everything between a client and an engine.

- ``config``: the typed ``ServeConfig``; ``repo``: the model repository rendered from it.
- ``frontdoor``: one text request's logic (validate, tokenize, detokenise); ``frontdoor_service``: the
  front door's request lifecycle; ``engine_link``: its gRPC calls to the engine model.
- ``engine_service``: the engine stand-ins' request lifecycle.
- ``outbox``: sending responses off the producing thread; ``responder``: the one Triton response path;
  ``gauges``: metrics.
- ``launcher``: starting and stopping tritonserver; ``http_guard``: the HTTP front that bounds bodies.
"""
