"""The Triton model repository, rendered from a ``ServeConfig``.

No templates: each model config is a dataclass written out field by field, and rendering refuses
empty values or anything that looks like an unfilled ``${placeholder}``. Each Python model gets the
whole ``ServeConfig`` as JSON beside its ``config.pbtxt``; its pbtxt parameters only tell clients
what they may want to know (template, limits, the engine's name).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..wire.tensors import ENGINE_INPUTS, ENGINE_OUTPUTS, FRONT_DOOR_INPUTS, FRONT_DOOR_OUTPUTS, TensorSpec
from .config import SERVE_CONFIG_FILE, ConfigError, EngineKind, ServeConfig


# --- pbtxt --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    name: str
    backend: str
    max_batch_size: int
    decoupled: bool
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: dict[str, str] = field(default_factory=dict)
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    max_queue_size: int | None = None  # dynamic batching queue bound (Triton rejects beyond it)


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _tensor(spec: TensorSpec, is_input: bool) -> str:
    lines = [f"    name: {_q(spec.name)}", f"    data_type: {spec.data_type}", f"    dims: [ {', '.join(map(str, spec.dims))} ]"]
    if is_input and spec.optional:
        lines.append("    optional: true")
    return "  {\n" + "\n".join(lines) + "\n  }"


def to_pbtxt(m: ModelConfig) -> str:
    for k, v in m.parameters.items():
        if v is None or str(v) == "" or "${" in str(v):
            raise ConfigError(f"{m.name}: parameter {k!r} has no value ({v!r})")
    out = [f"name: {_q(m.name)}", f"backend: {_q(m.backend)}", f"max_batch_size: {m.max_batch_size}"]
    out.append(f"model_transaction_policy {{\n  decoupled: {'true' if m.decoupled else 'false'}\n}}")
    if m.max_queue_size is not None:
        out.append(
            "dynamic_batching {\n  default_queue_policy {\n"
            f"    max_queue_size: {m.max_queue_size}\n  }}\n}}"
        )
    out.append("input [\n" + ",\n".join(_tensor(s, True) for s in m.inputs) + "\n]")
    out.append("output [\n" + ",\n".join(_tensor(s, False) for s in m.outputs) + "\n]")
    out.append(f"instance_group [\n  {{\n    count: {m.instance_count}\n    kind: {m.instance_kind}\n  }}\n]")
    for k, v in m.parameters.items():
        out.append(f"parameters {{\n  key: {_q(k)}\n  value: {{\n    string_value: {_q(str(v))}\n  }}\n}}")
    return "\n".join(out) + "\n"


def model_configs(cfg: ServeConfig) -> list[ModelConfig]:
    """Every model in the repository for this config: the engine and the text front door(s)."""
    # a stand-in loads the same config as the real backend, with only the backend swapped
    engine = tensorrt_llm_config(cfg, "tensorrtllm" if cfg.engine is EngineKind.TENSORRT_LLM else "python")
    advertised = {  # for the operator reading the config (no paths); the model reads the JSON
        "engine_model_name": cfg.engine_name,
        "max_input_len": str(cfg.max_input_len),
        "max_seq_len": str(cfg.max_seq_len),
        "template": cfg.template,
    }
    doors = [
        ModelConfig(name, "python", cfg.max_batch_size, True, tuple(FRONT_DOOR_INPUTS.values()),
                    tuple(FRONT_DOOR_OUTPUTS.values()), advertised, instance_count=cfg.front_door_instances)
        for name in cfg.front_door_names
    ]
    return [engine, *doors]


def tensorrt_llm_config(cfg: ServeConfig, backend: str = "tensorrtllm") -> ModelConfig:
    """The real TensorRT-LLM backend model (rendered everywhere, loaded only on a GPU machine)."""
    params = {
        "gpt_model_type": "inflight_fused_batching",
        "gpt_model_path": str(cfg.engine_dir),
        "batch_scheduler_policy": cfg.batch_scheduler_policy,
        "kv_cache_free_gpu_mem_fraction": str(cfg.kv_cache_free_gpu_mem_fraction),
        "exclude_input_in_output": "true",
        "enable_kv_cache_reuse": "true" if cfg.kv_cache_reuse else "false",
        "enable_chunked_context": "true" if cfg.chunked_context else "false",
        "max_beam_width": "1",
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
        "cancellation_check_period_ms": "10",
        "stats_check_period_ms": "100",
        "tokenizer_dir": str(cfg.tokenizer_dir),
    }
    return ModelConfig(
        cfg.engine_name, backend, cfg.max_batch_size, True,
        tuple(ENGINE_INPUTS.values()), tuple(ENGINE_OUTPUTS.values()), params,
        instance_kind="KIND_CPU", max_queue_size=cfg.max_queue_size,
    )


def model_repo_source() -> Path:
    """The adapters (``model_repo/*/1/model.py``) of this checkout."""
    return Path(__file__).resolve().parents[2] / "model_repo"


def render_repo(cfg: ServeConfig, out_dir: str | Path) -> Path:
    """Write a complete Triton model repository for ``cfg`` into ``out_dir`` (replacing it)."""
    out = Path(out_dir)
    src = model_repo_source()
    cfg = cfg.resolved()
    if out.exists():
        shutil.rmtree(out)
    for m in model_configs(cfg):
        d = out / m.name
        (d / "1").mkdir(parents=True)
        (d / "config.pbtxt").write_text(to_pbtxt(m), encoding="utf-8")
        if m.backend == "python":
            kind = "text" if m.name in cfg.front_door_names else "engine"
            adapter = src / kind / "1" / "model.py"
            if not adapter.exists():
                raise ConfigError(f"adapter {adapter} is missing from this checkout")
            shutil.copy(adapter, d / "1" / "model.py")
            cfg.write(d / SERVE_CONFIG_FILE)
    return out
