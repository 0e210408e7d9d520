"""Run a BuildPlan with TensorRT-LLM 1.2.1 and write the manifest beside the engine.

``tensorrt_llm`` is never imported here (its version is read from its metadata) and never faked. Where it is
missing, or is not exactly 1.2.1, ``build`` says so (naming the container that carries 1.2.1) and stops;
``dry_run`` still writes the plan, the commands and a manifest marked ``built: false``. The manifest's
``tensorrt_llm_version`` is the version that built the engine (the planned 1.2.1 in a dry run), and
``check_serving_versions`` refuses to serve an engine where that, the engine's own ``config.json``
``version`` and the installed TensorRT-LLM disagree: an engine loads only in the version that built it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from ziya_trt.errors import ZiyaError

from .commands import CALIB_DEFAULT, CONVERT, QUANTIZE, Step, build_steps, llm_api_settings
from .plan import BuildPlan
from .target import TRTLLM_VERSION, VersionMismatchError, container_for, plain_version

MANIFEST = "ziya_manifest.json"
# trtllm-build's config.json: Engine.save writes EngineConfig.to_dict(), whose top-level "version" is
# tensorrt_llm.__version__ at build time (tensorrt_llm/builder.py: build(), EngineConfig, get_engine_version)
ENGINE_CONFIG, ENGINE_CONFIG_VERSION_KEY = "config.json", "version"
# Directories whose examples/ may hold TensorRT-LLM's scripts, in the order searched: /app is the 26.07 Triton
# container's (tensorrtllm_backend's Dockerfile.triton.trt_llm_backend: WORKDIR /app, COPY examples; there is no
# TensorRT-LLM source tree in that image), the others are where a TensorRT-LLM checkout is commonly put
EXAMPLES_CANDIDATES = tuple(map(Path, ("/app", "/app/tensorrt_llm", "/opt/tensorrt_llm", "/workspace/TensorRT-LLM")))
EXAMPLE_SCRIPTS = (CONVERT, QUANTIZE)  # the scripts build_steps names, relative to such a directory


class BuildError(ZiyaError):
    def __init__(self, step: str, log: Path | None, message: str):
        self.step, self.log = step, log
        super().__init__(f"build step '{step}' failed: {message}" + (f" (log kept at {log})" if log else ""))


def trtllm_version() -> str | None:
    """The installed TensorRT-LLM's version, or None where it is not installed. Read without importing it
    (an import initialises CUDA and takes seconds): its distribution's metadata, else, for a source tree
    on the path, its ``tensorrt_llm/version.py``."""
    try:
        return importlib.metadata.version("tensorrt_llm")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        spec = importlib.util.find_spec("tensorrt_llm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    try:
        found = _VERSION_PY.search((Path(spec.origin).parent / "version.py").read_text())
    except OSError:
        found = None
    return found.group(1) if found else "unknown"


_VERSION_PY = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


def missing_scripts(root: Path) -> list[str]:
    """The scripts of ``EXAMPLE_SCRIPTS`` that ``root`` lacks."""
    return [rel for rel in EXAMPLE_SCRIPTS if not (root / rel).is_file()]


def find_source_tree(explicit: str | Path | None, candidates=EXAMPLES_CANDIDATES) -> Path | None:
    """The directory whose examples/ holds the llama convert_checkpoint.py and quantize.py: ``explicit``
    (--trtllm-source), else $TRTLLM_SOURCE, else the first of ``candidates`` that has both. A directory that
    was named (flag or variable) and lacks them is an error, not skipped. None where no candidate has them."""
    named = explicit or os.environ.get("TRTLLM_SOURCE")
    if named:
        root = Path(named).expanduser().resolve()
        if missing := missing_scripts(root):
            how = "--trtllm-source" if explicit else "TRTLLM_SOURCE"
            raise BuildError("preflight", None, f"{how} {root} has no {', '.join(missing)}: name the directory "
                             "that holds TensorRT-LLM's examples/ (/app in the 26.07 Triton container)")
        return root
    for c in candidates:
        if not missing_scripts(Path(c)):
            return Path(c)
    return None


def resolve_steps(steps: list[Step], root: Path) -> list[Step]:
    """``steps`` with their examples/ scripts as paths under ``root``."""
    return [Step(s.name, tuple(str(root / a) if a.startswith("examples/") else a for a in s.argv)) for s in steps]


def _not_found(candidates) -> str:
    return (f"cannot find TensorRT-LLM's examples/ ({', '.join(EXAMPLE_SCRIPTS)}) under "
            f"{', '.join(str(c) for c in candidates)}; pass --trtllm-source DIR or set TRTLLM_SOURCE")


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


def check_build_version(installed: str | None) -> None:
    """The build's preflight: TensorRT-LLM must be installed, and be exactly the version we build with."""
    if installed is None:
        raise BuildError("preflight", None, f"TensorRT-LLM {TRTLLM_VERSION} is not installed here "
                         f"(it needs an NVIDIA GPU and driver); use {container_for(TRTLLM_VERSION)}. `--dry-run` "
                         "writes the commands.")
    if installed != TRTLLM_VERSION:
        raise BuildError("preflight", None, f"TensorRT-LLM {installed} is installed here, but this project builds "
                         f"with {TRTLLM_VERSION} exactly (an engine loads only in the version that built it); "
                         f"use {container_for(TRTLLM_VERSION)}")


def write_manifest(engine_dir: Path, plan: BuildPlan, steps: list[Step], source: dict, built: bool,
                   build_time_s: float | None, tokenizer_dir: str, tensorrt_llm_version: str = TRTLLM_VERSION,
                   calib: Path = CALIB_DEFAULT) -> Path:
    """``tensorrt_llm_version``: the installed version that built the engine; the planned one in a dry run.
    ``calib``: the calibration set the steps use (recorded in the LLM-API equivalent too)."""
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
        "tensorrt_llm_version": tensorrt_llm_version,
        "commands": [list(s.argv) for s in steps],
        "llm_api_equivalent": llm_api_settings(plan, calib),
        "build_time_s": build_time_s,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    p = engine_dir / MANIFEST
    p.write_text(json.dumps(m, indent=2, ensure_ascii=False) + "\n")
    return p


def write_guided_info(engine_dir: Path, tokenizer_dir: str | Path, progress=print) -> Path | None:
    """The xgrammar tokenizer info JSON the tensorrt_llm backend's guided decoding reads
    (``xgrammar_tokenizer_info_path``), written beside the engine from its tokenizer, as TensorRT-LLM's
    ``generate_xgrammar_tokenizer_info.py`` writes it; None (and a note) where the tokenizer is not at hand."""
    from ziya_trt.engine.guided import TOKENIZER_INFO_FILE, write_tokenizer_info
    from ziya_trt.text.tokenizer import load_tokenizer

    if not Path(tokenizer_dir).is_dir():
        progress(f"no tokenizer at {tokenizer_dir}: {TOKENIZER_INFO_FILE} not written (guided decoding needs it)")
        return None
    engine_dir.mkdir(parents=True, exist_ok=True)
    return write_tokenizer_info(load_tokenizer(tokenizer_dir, require_chat_tokens=False).hf,
                                engine_dir / TOKENIZER_INFO_FILE)


def read_manifest(engine_dir: str | Path) -> dict:
    p = Path(engine_dir) / MANIFEST
    if not p.exists():
        raise ZiyaError(f"{p} not found: build the engine with `ziya-trt build` first")
    return json.loads(p.read_text())


def engine_config_version(engine_dir: str | Path) -> str | None:
    """The ``version`` trtllm-build wrote into the engine's ``config.json``; None where there is no engine yet."""
    p = Path(engine_dir) / ENGINE_CONFIG
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text()).get(ENGINE_CONFIG_VERSION_KEY)
    except (OSError, ValueError) as e:
        raise ZiyaError(f"{p} is not readable JSON ({e})") from None


def check_serving_versions(engine_dir: str | Path, manifest: dict, installed: str | None) -> None:
    """Refuse to serve when the engine's ``config.json`` or the installed TensorRT-LLM differs from the
    manifest's ``tensorrt_llm_version``. Where TensorRT-LLM is not installed (a CPU machine rendering the
    repository), only the engine directory is checked."""
    recorded = plain_version(manifest.get("tensorrt_llm_version"))
    if recorded is None:
        raise VersionMismatchError(f"{Path(engine_dir) / MANIFEST} records no tensorrt_llm_version: rebuild it "
                                   "with `ziya-trt build`")
    in_engine = engine_config_version(engine_dir)
    if in_engine is not None and in_engine != recorded:
        raise VersionMismatchError(
            f"{Path(engine_dir) / ENGINE_CONFIG} says TensorRT-LLM {in_engine} built this engine, but "
            f"{MANIFEST} says {recorded}: the directory holds an engine the manifest does not describe; rebuild it "
            "with `ziya-trt build`")
    if installed is not None and installed != recorded:
        raise VersionMismatchError(
            f"this engine was built with TensorRT-LLM {recorded} and loads only in that version, but {installed} "
            f"is installed here: serve it in {container_for(recorded)}, or rebuild it here")


def run_build(plan: BuildPlan, engine_dir: Path, work_dir: Path, source: dict, tokenizer_dir: str | None = None,
              trtllm_source: str | Path | None = None, calib: Path = CALIB_DEFAULT, dry_run: bool = False,
              progress=print, source_candidates=EXAMPLES_CANDIDATES) -> Path:
    """Run each step with its log in ``work_dir/logs``; on failure name the step and keep its log. The
    commands recorded (and, in a dry run, printed) name the scripts where they were found; a dry run that
    finds none keeps them relative to examples/'s directory and says so."""
    if not plan.fits:
        raise BuildError("plan", None, "the plan does not fit: " + "; ".join(plan.problems + plan.suggestions))
    steps = build_steps(plan, work_dir, engine_dir, calib)
    tokenizer_dir = tokenizer_dir or plan.model_dir
    if dry_run:
        src = find_source_tree(trtllm_source, source_candidates)
        if src is None:
            progress(f"[dry run] {_not_found(source_candidates)}. The commands below name the scripts relative to "
                     "the directory that holds examples/")
        else:
            steps = resolve_steps(steps, src)
        for s in steps:
            progress(f"[dry run] {s.name}: {' '.join(s.argv)}")
        write_guided_info(engine_dir, tokenizer_dir, progress)
        return write_manifest(engine_dir, plan, steps, source, False, None, tokenizer_dir, TRTLLM_VERSION, calib)
    installed = trtllm_version()
    check_build_version(installed)
    src = find_source_tree(trtllm_source, source_candidates)
    if src is None:
        raise BuildError("preflight", None, _not_found(source_candidates))
    steps = resolve_steps(steps, src)
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()
    for i, s in enumerate(steps, 1):
        log = logs / f"{i:02d}-{s.name}.log"
        progress(f"[{i}/{len(steps)}] {s.name} ... (log: {log})")
        t0 = time.monotonic()
        with open(log, "w") as f:
            proc = subprocess.Popen(list(s.argv), stdout=f, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                time.sleep(5)
                progress(f"      {s.name}: {time.monotonic() - t0:.0f}s")
        if proc.returncode != 0:
            raise BuildError(s.name, log, f"exit code {proc.returncode}")
        progress(f"[{i}/{len(steps)}] {s.name} done in {time.monotonic() - t0:.0f}s")
    write_guided_info(engine_dir, tokenizer_dir, progress)
    return write_manifest(engine_dir, plan, steps, source, True, time.monotonic() - t_all, tokenizer_dir, installed,
                          calib)
