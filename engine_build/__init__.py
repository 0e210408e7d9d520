"""Checkpoint -> TensorRT-LLM 1.2.1 engine: fetch, validate, plan, build, manifest."""
