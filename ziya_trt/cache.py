"""Where the package keeps what it builds or converts (override with ZIYA_TRT_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    base = Path(os.environ.get("ZIYA_TRT_CACHE") or Path.home() / ".cache" / "ziya-trt")
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p
