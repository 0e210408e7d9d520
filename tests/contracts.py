"""The TensorRT-LLM 1.2.1 interface facts the contract tests check against (contracts/trtllm-1.2.json)."""

import json
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FACTS = ROOT / "contracts" / "trtllm-1.2.json"
SHARED = ROOT.parent / "shared" / "reference" / "trtllm-1.2.json"


@lru_cache(maxsize=1)
def facts() -> dict:
    return json.loads(FACTS.read_text())
