"""One typed ``ServeConfig`` renders every ``config.pbtxt`` of the model repository.

No templates: each model config is a dataclass written out field by field, and rendering refuses
empty values or anything that looks like an unfilled ``${placeholder}``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .engine_link import is_host_port
from .errors import ZiyaError
from .tensors import ENGINE_INPUTS, ENGINE_OUTPUTS, FRONT_DOOR_INPUTS, FRONT_DOOR_OUTPUTS, TensorSpec


class ConfigError(ZiyaError):
    """A serve configuration is incomplete or inconsistent."""


class EngineKind(str, Enum):
    TENSORRT_LLM = "tensorrt_llm"  # the real TensorRT-LLM backend (GPU)
    REFERENCE = "reference"  # transformers on CPU, in-flight batching
    SYNTHETIC = "synthetic"  # no model, known token rate


@dataclass(frozen=True)
class ServeConfig:
    engine: EngineKind
    tokenizer_dir: Path
    model_dir: Path | None = None  # HF checkpoint (reference)
    engine_dir: Path | None = None  # TensorRT-LLM engine (tensorrt_llm)
    front_door_names: tuple[str, ...] = ("ziya",)
    engine_model_name: str | None = None  # default: the engine kind's name
    template: str = "ziya"
    max_batch_size: int = 8
    max_queue_size: int = 64
    max_input_len: int = 1024
    max_seq_len: int = 2048
    dtype: str = "float32"
    synthetic_tokens_per_s: float = 50.0
    synthetic_first_token_s: float = 0.02
    kv_cache_free_gpu_mem_fraction: float = 0.9
    batch_scheduler_policy: str = "guaranteed_no_evict"
    world_size: int = 1
    drain_timeout_s: float = 20.0
    # the Python models (engine stand-ins, front door): how often each request's cancellation is polled
    # (an IPC round trip per request in Triton's Python backend), and the engine's response sender threads
    cancel_check_ms: int = 50
    send_threads: int = 4
    # the server's own gRPC address, which the front door calls the engine through; None: ``ziya-trt serve``
    # (``TritonServer``) tells it at start, through the environment
    grpc_url: str | None = None
    # front-door model instances (stub processes). Each takes requests one ``execute`` at a time, about
    # 11 ms apart on 2 busy cores, so one instance caps intake near 90 requests/s
    front_door_instances: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine", EngineKind(self.engine))
        problems = []
        if self.engine is EngineKind.REFERENCE and not self.model_dir:
            problems.append("the reference engine needs model_dir")
        if self.engine is EngineKind.TENSORRT_LLM and not self.engine_dir:
            problems.append("the tensorrt_llm engine needs engine_dir")
        if not self.front_door_names:
            problems.append("at least one front door name is needed")
        if not 1 <= self.max_input_len < self.max_seq_len:
            problems.append(f"need 1 <= max_input_len ({self.max_input_len}) < max_seq_len ({self.max_seq_len})")
        if self.max_batch_size < 1 or self.max_queue_size < 0:
            problems.append("max_batch_size must be >= 1 and max_queue_size >= 0")
        if self.cancel_check_ms < 1 or self.send_threads < 1 or self.front_door_instances < 1:
            problems.append("cancel_check_ms, send_threads and front_door_instances must be >= 1")
        if self.grpc_url is not None and not is_host_port(self.grpc_url):
            problems.append(f"grpc_url {self.grpc_url!r} is not host:port")
        if self.engine_name in self.front_door_names:
            problems.append(f"model name {self.engine_name!r} is used twice")
        if problems:
            raise ConfigError("serve config: " + "; ".join(problems))

    @property
    def engine_name(self) -> str:
        return self.engine_model_name or self.engine.value


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
    engine_params = {
        "engine_kind": cfg.engine.value,
        "max_input_len": str(cfg.max_input_len),
        "max_seq_len": str(cfg.max_seq_len),
        "max_queue_size": str(cfg.max_queue_size),
        "drain_timeout_s": str(cfg.drain_timeout_s),
        "cancellation_check_period_ms": str(cfg.cancel_check_ms),
        "send_threads": str(cfg.send_threads),
    }
    if cfg.engine is EngineKind.TENSORRT_LLM:
        engine = tensorrt_llm_config(cfg)
    else:
        if cfg.engine is EngineKind.REFERENCE:
            engine_params |= {"model_dir": str(Path(cfg.model_dir).resolve()), "dtype": cfg.dtype}
        else:
            engine_params |= {
                "tokens_per_s": str(cfg.synthetic_tokens_per_s),
                "first_token_s": str(cfg.synthetic_first_token_s),
                "tokenizer_dir": str(Path(cfg.tokenizer_dir).resolve()),
            }
        engine_params["max_batch_size"] = str(cfg.max_batch_size)
        engine = ModelConfig(
            cfg.engine_name, "python", cfg.max_batch_size, True,
            tuple(ENGINE_INPUTS.values()), tuple(ENGINE_OUTPUTS.values()), engine_params,
        )
    door_params = {
        "tokenizer_dir": str(Path(cfg.tokenizer_dir).resolve()),
        "engine_model_name": cfg.engine_name,
        "max_input_len": str(cfg.max_input_len),
        "max_seq_len": str(cfg.max_seq_len),
        "template": cfg.template,
        # each instance admits its share (the engine's own admission limit is exact)
        "max_inflight": str(-(-(cfg.max_batch_size + cfg.max_queue_size) // cfg.front_door_instances)),
        "drain_timeout_s": str(cfg.drain_timeout_s),
        "cancellation_check_period_ms": str(cfg.cancel_check_ms),
        "send_threads": str(cfg.send_threads),
    }
    if cfg.grpc_url:
        door_params["engine_grpc_url"] = cfg.grpc_url
    doors = [
        ModelConfig(name, "python", cfg.max_batch_size, True, tuple(FRONT_DOOR_INPUTS.values()),
                    tuple(FRONT_DOOR_OUTPUTS.values()), door_params, instance_count=cfg.front_door_instances)
        for name in cfg.front_door_names
    ]
    return [engine, *doors]


def tensorrt_llm_config(cfg: ServeConfig) -> ModelConfig:
    """The real TensorRT-LLM backend model (rendered everywhere, loaded only on a GPU machine)."""
    params = {
        "gpt_model_type": "inflight_fused_batching",
        "gpt_model_path": str(cfg.engine_dir),
        "batch_scheduler_policy": cfg.batch_scheduler_policy,
        "kv_cache_free_gpu_mem_fraction": str(cfg.kv_cache_free_gpu_mem_fraction),
        "exclude_input_in_output": "true",
        "enable_kv_cache_reuse": "false",
        "enable_chunked_context": "false",
        "max_beam_width": "1",
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
        "cancellation_check_period_ms": "10",
        "stats_check_period_ms": "100",
        "tokenizer_dir": str(cfg.tokenizer_dir),
    }
    return ModelConfig(
        cfg.engine_name, "tensorrtllm", cfg.max_batch_size, True,
        tuple(ENGINE_INPUTS.values()), tuple(ENGINE_OUTPUTS.values()), params,
        instance_kind="KIND_CPU", max_queue_size=cfg.max_queue_size,
    )


def model_repo_source() -> Path:
    """The adapters (``model_repo/*/1/model.py``) of this checkout."""
    return Path(__file__).resolve().parent.parent / "model_repo"


def render_repo(cfg: ServeConfig, out_dir: str | Path) -> Path:
    """Write a complete Triton model repository for ``cfg`` into ``out_dir`` (replacing it)."""
    out = Path(out_dir)
    src = model_repo_source()
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
    return out
