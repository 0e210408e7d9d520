"""Code that runs inside Triton's Python backend stub processes, one per model instance.

Only the adapters in ``model_repo/*/1/model.py`` import ``triton_python_backend_utils``; everything here takes plain
callables and arrays, so it is tested without a server. A stub serves requests one ``execute`` at a time: nothing
here may block there; responses go out from the ``outbox``'s sender threads.

- ``frontdoor_service``: the text front door (``ziya``): requests in, text responses out.
- ``engine_service``: the engine stand-ins (reference, synthetic) behind the tensorrt_llm model's interface;
  ``backend_rules``: what the C++ backend refuses at load and per request, enforced the same way.
- ``outbox``: sending responses off the producing thread, cancellation polling; ``responder``: the one Triton
  response path; ``gauges``: the models' Prometheus gauges (Triton's custom metrics).
"""
