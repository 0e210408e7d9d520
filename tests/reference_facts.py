"""Loads ../shared/reference/trtllm-1.2.json (TensorRT-LLM 1.2 interface facts)."""

import json
import os
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def facts() -> dict:
    candidates = [Path(os.environ["ZIYA_TRT_REFERENCE"])] if os.environ.get("ZIYA_TRT_REFERENCE") else []
    candidates.append(ROOT.parent / "shared" / "reference" / "trtllm-1.2.json")
    for p in candidates:
        if p.exists():
            return json.loads(p.read_text())
    if os.environ.get("CI"):
        raise FileNotFoundError(f"TensorRT-LLM facts not found at {candidates}")
    pytest.skip("shared/reference/trtllm-1.2.json is not beside this checkout")
