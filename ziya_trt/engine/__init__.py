"""Engines behind the ``tensorrt_llm`` tensor interface: the torch reference and the synthetic one."""
