"""Where the package keeps what it builds or converts (override with ZIYA_TRT_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    base = Path(os.environ.get("ZIYA_TRT_CACHE") or Path.home() / ".cache" / "ziya-trt")
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def checkpoint_cache_dir(kind: str, name: str) -> Path:
    """A checkpoint converted or built here, one directory per transformers major version: what 5.x saves,
    4.57 reads wrongly or not at all (``rope_parameters`` for ``rope_theta``, whose default it then uses;
    ``tokenizer_class`` ``TokenizersBackend``), and the GPU image runs 4.57 while a CPU install runs 5.x."""
    from importlib.metadata import version

    return cache_dir(kind, f"{name}.transformers{version('transformers').split('.')[0]}")
