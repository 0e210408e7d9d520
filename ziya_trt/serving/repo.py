"""The Triton model repository, rendered from a ``ServeConfig``.

No templates on disk: each model config is a dataclass written out field by field. The ``tensorrt_llm``
model is rendered from the whole TensorRT-LLM 1.2.1 template (``wire/trtllm_template.py``, from the facts in
``contracts/``): every parameter key, input and output, with ``reshape``, ``allow_ragged_batch`` and ``optional``
as the template has them, and ``dynamic_batching`` as it has it. A key this project does not set keeps its literal
``${placeholder}``, as ``fill_template.py`` leaves it: the C++ backend's own "unset" (it reads some keys with no
fallback, so a key is never dropped). Anything else that is empty or looks like a placeholder is refused. The
engine stand-ins load this same config with the backend swapped to python. Each Python model gets the whole
``ServeConfig`` as JSON beside its ``config.pbtxt``; the front doors' pbtxt parameters only tell clients what they
may want to know (template, limits, the engine's name).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..wire.tensors import FRONT_DOOR_INPUTS, FRONT_DOOR_OUTPUTS, TensorSpec
from ..wire.trtllm_template import template
from .config import SERVE_CONFIG_FILE, ConfigError, EngineKind, ServeConfig


# --- pbtxt --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placeholder:
    """A template value left unset, rendered as the literal ``${name}`` (the backend's "unset")."""

    name: str

    def __str__(self) -> str:
        return "${" + self.name + "}"


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_size: int  # Triton's queue bound; the tensorrt_llm backend makes it the executor's maxQueueSize
    preferred_batch_size: int | None = None
    max_queue_delay_us: int = 0


@dataclass(frozen=True)
class ModelConfig:
    name: str
    backend: str
    max_batch_size: int
    decoupled: bool
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parameters: dict[str, "str | Placeholder"] = field(default_factory=dict)
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    dynamic_batching: DynamicBatching | None = None


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _tensor(spec: TensorSpec, is_input: bool) -> str:
    lines = [f"    name: {_q(spec.name)}", f"    data_type: {spec.data_type}", f"    dims: [ {', '.join(map(str, spec.dims))} ]"]
    if spec.reshape is not None:
        lines.append(f"    reshape: {{ shape: [ {', '.join(map(str, spec.reshape))} ] }}")
    if is_input and spec.allow_ragged_batch:
        lines.append("    allow_ragged_batch: true")
    if is_input and spec.optional:
        lines.append("    optional: true")
    return "  {\n" + "\n".join(lines) + "\n  }"


def to_pbtxt(m: ModelConfig) -> str:
    for k, v in m.parameters.items():
        if not isinstance(v, Placeholder) and (v is None or str(v) == "" or "${" in str(v)):
            raise ConfigError(f"{m.name}: parameter {k!r} has no value ({v!r})")
    for spec in m.inputs + m.outputs:
        if not spec.data_type.startswith("TYPE_"):
            raise ConfigError(f"{m.name}: tensor {spec.name!r} has no data type ({spec.data_type!r})")
    out = [f"name: {_q(m.name)}", f"backend: {_q(m.backend)}", f"max_batch_size: {m.max_batch_size}"]
    out.append(f"model_transaction_policy {{\n  decoupled: {'true' if m.decoupled else 'false'}\n}}")
    if (b := m.dynamic_batching) is not None:
        rows = [f"  preferred_batch_size: [ {b.preferred_batch_size} ]"] if b.preferred_batch_size else []
        rows += [f"  max_queue_delay_microseconds: {b.max_queue_delay_us}",
                 f"  default_queue_policy {{\n    max_queue_size: {b.max_queue_size}\n  }}"]
        out.append("dynamic_batching {\n" + "\n".join(rows) + "\n}")
    out.append("input [\n" + ",\n".join(_tensor(s, True) for s in m.inputs) + "\n]")
    out.append("output [\n" + ",\n".join(_tensor(s, False) for s in m.outputs) + "\n]")
    out.append(f"instance_group [\n  {{\n    count: {m.instance_count}\n    kind: {m.instance_kind}\n  }}\n]")
    for k, v in m.parameters.items():
        out.append(f"parameters {{\n  key: {_q(k)}\n  value: {{\n    string_value: {_q(str(v))}\n  }}\n}}")
    return "\n".join(out) + "\n"


def model_configs(cfg: ServeConfig, tokenizer_info: Path | None = None) -> list[ModelConfig]:
    """Every model in the repository for this config: the engine and the text front door(s). ``tokenizer_info``: the
    xgrammar tokenizer info file a stand-in's guided decoding reads."""
    # a stand-in loads the same config as the real backend, with only the backend swapped
    engine = tensorrt_llm_config(cfg, "tensorrtllm" if cfg.engine is EngineKind.TENSORRT_LLM else "python",
                                 tokenizer_info)
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


# the template's data-type placeholders (inputs and outputs this project never uses, but Triton parses every
# data_type): the values of TensorRT-LLM's own llama example
TRTLLM_DATA_TYPES = {
    "encoder_input_features_data_type": "TYPE_FP16",
    "prompt_embedding_table_data_type": "TYPE_FP16",
    "logits_datatype": "TYPE_FP32",
}


TOKENIZER_INFO_FILE = "xgrammar_tokenizer_info.json"  # in the engine directory (tensorrt_llm) or the engine model's


def tensorrt_llm_settings(cfg: ServeConfig, tokenizer_info: Path | None = None) -> dict[str, str]:
    """The template's parameters this project sets; every other key keeps its placeholder. Guided decoding is on
    where the config asks for it and the engine has it: for tensorrt_llm, with the tokenizer info in the engine
    directory (``ziya-trt build`` writes it); for a stand-in, with ``tokenizer_info`` (``render_repo`` writes it)."""
    settings = {
        "max_beam_width": "1",
        "gpt_model_type": "inflight_fused_batching",
        "batch_scheduler_policy": cfg.batch_scheduler_policy,
        "kv_cache_free_gpu_mem_fraction": str(cfg.kv_cache_free_gpu_mem_fraction),
        "exclude_input_in_output": "true",
        "enable_kv_cache_reuse": "true" if cfg.kv_cache_reuse else "false",
        "enable_chunked_context": "true" if cfg.chunked_context else "false",
        "cancellation_check_period_ms": "10",
        "stats_check_period_ms": "100",
        "tokenizer_dir": str(cfg.tokenizer_dir),
        # log probabilities over the whole vocabulary, as OpenAI defines them; unset, the backend normalises them
        # within the top-k set, which makes every greedy token's 0 (contracts/log-probs.json)
        "normalize_log_probs": "false",
    }
    if cfg.engine_dir is not None:
        settings["gpt_model_path"] = str(cfg.engine_dir)
    if cfg.engine is EngineKind.TENSORRT_LLM and cfg.engine_dir is not None:
        tokenizer_info = tokenizer_info or Path(cfg.engine_dir) / TOKENIZER_INFO_FILE
    if cfg.guides and tokenizer_info is not None:  # contracts/guided-decoding.json
        settings["guided_decoding_backend"] = "xgrammar"
        settings["xgrammar_tokenizer_info_path"] = str(tokenizer_info)
    return settings


def tensorrt_llm_config(cfg: ServeConfig, backend: str = "tensorrtllm",
                        tokenizer_info: Path | None = None) -> ModelConfig:
    """The ``tensorrt_llm`` model, whole (rendered everywhere, loaded by the C++ backend only on a GPU machine)."""
    t = template()
    settings = tensorrt_llm_settings(cfg, tokenizer_info)
    unknown = set(settings) - set(t.keys)
    if unknown:
        raise ConfigError(f"tensorrt_llm: {', '.join(sorted(unknown))} not among the template's parameter keys")
    params: dict[str, str | Placeholder] = {}
    for p in t.parameters:
        if p.key in settings:
            params[p.key] = settings[p.key]
        else:  # unset: the placeholder as fill_template.py leaves it, or the template's literal value
            params[p.key] = Placeholder(p.placeholder) if p.placeholder else p.template_value

    def typed(spec: TensorSpec) -> TensorSpec:
        name = spec.data_type[2:-1] if spec.data_type.startswith("${") else None
        return replace(spec, data_type=TRTLLM_DATA_TYPES[name]) if name else spec

    return ModelConfig(
        cfg.engine_name, backend, cfg.max_batch_size, True,
        tuple(map(typed, t.inputs)), tuple(map(typed, t.outputs)), params,
        instance_kind=t.instance_kind,
        dynamic_batching=DynamicBatching(cfg.max_queue_size, preferred_batch_size=cfg.max_batch_size),
    )


def write_tokenizer_info(cfg: ServeConfig, path: Path) -> Path:
    """The xgrammar tokenizer info JSON of the config's tokenizer, as TensorRT-LLM's script writes it."""
    from ..engine.guided import write_tokenizer_info as write
    from ..text.tokenizer import load_tokenizer

    try:
        return write(load_tokenizer(cfg.tokenizer_dir, require_chat_tokens=False).hf, path)
    except ValueError as e:
        raise ConfigError(f"guided_decoding: {e} (serve with --no-guided-decoding to go without)") from None


def check_tokenizer_info(cfg: ServeConfig) -> Path | None:
    """For tensorrt_llm with guided decoding on: the engine directory's tokenizer info JSON, which must exist, hold the
    keys the backend reads, and belong to the config's tokenizer (the same tokens by id, the same end token); else a
    ``ConfigError`` that says how to fix it. None when guided decoding is off."""
    if not (cfg.guides and cfg.engine is EngineKind.TENSORRT_LLM and cfg.engine_dir is not None):
        return None
    from ..engine.guided import mismatch, read_tokenizer_info
    from ..text.tokenizer import load_tokenizer

    path = Path(cfg.engine_dir) / TOKENIZER_INFO_FILE
    fix = "`ziya-trt build` writes it beside the engine; or serve with --no-guided-decoding"
    if not path.exists():
        raise ConfigError(f"guided_decoding: {path} not found: the tensorrt_llm backend reads the xgrammar tokenizer "
                          f"info from it; {fix}")
    try:
        why = mismatch(read_tokenizer_info(path), load_tokenizer(cfg.tokenizer_dir, require_chat_tokens=False).hf)
    except ValueError as e:
        raise ConfigError(f"guided_decoding: {e}; {fix}") from None
    if why:
        raise ConfigError(f"guided_decoding: {path} was not made from the tokenizer in {cfg.tokenizer_dir} ({why}); "
                          f"{fix}")
    return path


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
    # a stand-in's guided decoding reads the tokenizer info from its own model directory, written here from the
    # tokenizer (a repository rendered where the tokenizer is not, to be served elsewhere, goes without)
    served_here = cfg.guides and cfg.engine is EngineKind.REFERENCE and Path(cfg.tokenizer_dir).is_dir()
    info = (out / cfg.engine_name / TOKENIZER_INFO_FILE).resolve() if served_here else None
    for m in model_configs(cfg, info):
        d = out / m.name
        (d / "1").mkdir(parents=True)
        (d / "config.pbtxt").write_text(to_pbtxt(m), encoding="utf-8")
        if info is not None and m.name == cfg.engine_name:
            write_tokenizer_info(cfg, info)
        if m.backend == "python":
            kind = "text" if m.name in cfg.front_door_names else "engine"
            adapter = src / kind / "1" / "model.py"
            if not adapter.exists():
                raise ConfigError(f"adapter {adapter} is missing from this checkout")
            shutil.copy(adapter, d / "1" / "model.py")
            cfg.write(d / SERVE_CONFIG_FILE)
    return out
