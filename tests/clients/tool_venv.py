"""Benchmark clients that cannot share the project's environment (guidellm and AIPerf need numpy 2; the project
pins numpy < 2 with TensorRT-LLM 1.2.1 and nvidia-pytriton), each in a virtual environment of its own under the
user cache, installed once from the package registry, pinned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ziya_trt.cache import cache_dir

PINS = {"guidellm": "guidellm==0.8.1", "aiperf": "aiperf==0.13.0"}


def tool_venv(name: str) -> Path:
    """The ``bin`` folder of ``name``'s environment, made on first use (a failed install leaves nothing behind)."""
    spec = PINS[name]
    root = cache_dir("tool-venvs", spec.replace("==", "-"))
    ready = root / ".installed"
    if not ready.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
        pip = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", spec],
                             capture_output=True, text=True)
        if pip.returncode != 0:
            raise RuntimeError(f"pip install {spec} failed:\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}")
        ready.write_text(spec + "\n")
    return root / "bin"
