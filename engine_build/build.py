"""Run a BuildPlan with TensorRT-LLM 1.2.1 and write the manifest beside the engine.

``tensorrt_llm`` is imported lazily and only to read its version: it is never faked. Where it is
missing, ``build`` says so and stops; ``dry_run`` still writes the plan, the commands and a manifest
marked ``built: false``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from ziya_trt.errors import ZiyaError

from .commands import CALIB_DEFAULT, Step, build_steps, llm_api_settings
from .plan import BuildPlan

MANIFEST = "ziya_manifest.json"
TRTLLM_VERSION = "1.2.1"
EXAMPLES_CANDIDATES = ("/app/tensorrt_llm", "/opt/tensorrt_llm", "/workspace/TensorRT-LLM")


class BuildError(ZiyaError):
    def __init__(self, step: str, log: Path | None, message: str):
        self.step, self.log = step, log
        super().__init__(f"build step '{step}' failed: {message}" + (f" (log kept at {log})" if log else ""))


def trtllm_version() -> str | None:
    """The installed TensorRT-LLM's version, or None where it cannot be imported."""
    if importlib.util.find_spec("tensorrt_llm") is None:
        return None
    try:
        import tensorrt_llm

        return getattr(tensorrt_llm, "__version__", "unknown")
    except Exception:  # present but broken (no GPU driver, missing CUDA libraries)
        return None


def find_source_tree(explicit: str | Path | None) -> Path | None:
    """The TensorRT-LLM source tree whose examples/ holds convert_checkpoint.py and quantize.py."""
    for c in [explicit, os.environ.get("TRTLLM_SOURCE"), *EXAMPLES_CANDIDATES]:
        if c and (Path(c) / "examples" / "quantization" / "quantize.py").exists():
            return Path(c)
    return None


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def hash_files(d: Path, patterns=("*.json", "*.model", "*.engine", "*.safetensors")) -> dict[str, str]:
    out = {}
    for pat in patterns:
        for p in sorted(d.glob(pat)):
            if p.name != MANIFEST:
                out[p.name] = sha256(p)
    return out


def write_manifest(engine_dir: Path, plan: BuildPlan, steps: list[Step], source: dict, built: bool,
                   build_time_s: float | None, tokenizer_dir: str) -> Path:
    engine_dir.mkdir(parents=True, exist_ok=True)
    m = {
        "format": 1,
        "built": built,
        "source": source,
        "tokenizer_dir": tokenizer_dir,
        "source_files": hash_files(Path(plan.model_dir)) if Path(plan.model_dir).is_dir() else {},
        "engine_files": hash_files(engine_dir) if built else {},
        "plan": asdict(plan),
        "dtype": plan.dtype,
        "world_size": plan.world_size,
        "tensorrt_llm_version": trtllm_version() or f"{TRTLLM_VERSION} (planned; not installed where this ran)",
        "commands": [list(s.argv) for s in steps],
        "llm_api_equivalent": llm_api_settings(plan),
        "build_time_s": build_time_s,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    p = engine_dir / MANIFEST
    p.write_text(json.dumps(m, indent=2, ensure_ascii=False) + "\n")
    return p


def read_manifest(engine_dir: str | Path) -> dict:
    p = Path(engine_dir) / MANIFEST
    if not p.exists():
        raise ZiyaError(f"{p} not found: build the engine with `ziya-trt build` first")
    return json.loads(p.read_text())


def run_build(plan: BuildPlan, engine_dir: Path, work_dir: Path, source: dict, tokenizer_dir: str | None = None,
              trtllm_source: str | Path | None = None, calib: Path = CALIB_DEFAULT, dry_run: bool = False,
              progress=print) -> Path:
    """Run each step with its log in ``work_dir/logs``; on failure name the step and keep its log."""
    if not plan.fits:
        raise BuildError("plan", None, "the plan does not fit: " + "; ".join(plan.problems + plan.suggestions))
    steps = build_steps(plan, work_dir, engine_dir, calib)
    tokenizer_dir = tokenizer_dir or plan.model_dir
    if dry_run:
        for s in steps:
            progress(f"[dry run] {s.name}: {' '.join(s.argv)}")
        return write_manifest(engine_dir, plan, steps, source, False, None, tokenizer_dir)
    if trtllm_version() is None:
        raise BuildError("preflight", None, "TensorRT-LLM 1.2.1 is not installed here (it needs an NVIDIA GPU and "
                         "driver; use the Triton 25.12-trtllm container). `--dry-run` writes the commands.")
    src = find_source_tree(trtllm_source)
    if src is None:
        raise BuildError("preflight", None, "cannot find TensorRT-LLM's examples/ (convert_checkpoint.py, "
                         "quantize.py); pass --trtllm-source or set TRTLLM_SOURCE")
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()
    for i, s in enumerate(steps, 1):
        argv = [str(src / a) if a.startswith("examples/") else a for a in s.argv]
        log = logs / f"{i:02d}-{s.name}.log"
        progress(f"[{i}/{len(steps)}] {s.name} ... (log: {log})")
        t0 = time.monotonic()
        with open(log, "w") as f:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                time.sleep(5)
                progress(f"      {s.name}: {time.monotonic() - t0:.0f}s")
        if proc.returncode != 0:
            raise BuildError(s.name, log, f"exit code {proc.returncode}")
        progress(f"[{i}/{len(steps)}] {s.name} done in {time.monotonic() - t0:.0f}s")
    return write_manifest(engine_dir, plan, steps, source, True, time.monotonic() - t_all, tokenizer_dir)
