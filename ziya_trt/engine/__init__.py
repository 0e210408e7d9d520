"""Engines behind TensorRT-LLM's ``tensorrt_llm`` tensor interface, for machines without a GPU:
request and output types (``request``), the in-flight batching loop (``loop``), the torch reference
engine (``reference``, with its ``sampler``) and the synthetic one (``synthetic``)."""
