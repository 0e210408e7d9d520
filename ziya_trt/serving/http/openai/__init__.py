"""The OpenAI-compatible API: ``server`` (routes, streaming), ``schema`` (pydantic request models, error bodies)."""
