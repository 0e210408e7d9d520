"""``ServeConfig``: the one typed configuration of a served model repository.

The launcher renders the repository from it (``repo``), and the Python models read it back, whole,
from the JSON file rendered beside their ``config.pbtxt`` (``SERVE_CONFIG_FILE``): no parameter is
turned into a string and parsed again by hand.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..engine.synthetic import SCHEDULES as SYNTHETIC_SCHEDULES
from ..wire.grpc import is_host_port
from .config_model import NOT_A_FLAG, ConfigError, FrozenConfig
from .limits import HttpLimits, SupervisorLimits

SERVE_CONFIG_FILE = "serve_config.json"  # in each Python model's directory
_PATHS = ("tokenizer_dir", "model_dir", "engine_dir")


class EngineKind(str, Enum):
    TENSORRT_LLM = "tensorrt_llm"  # the real TensorRT-LLM backend (GPU)
    REFERENCE = "reference"  # transformers on CPU, in-flight batching
    SYNTHETIC = "synthetic"  # no model, known token rate


class ServeConfig(FrozenConfig):
    """What is served and how: the engine, the model's limits, the front doors, and the launcher's own limits
    (``http``, ``supervisor``). Frozen; ``with_`` makes a changed copy, validated again."""

    config_name = "serve config"

    engine: EngineKind = Field(
        EngineKind.REFERENCE,
        description="the engine: tensorrt_llm (TensorRT-LLM, GPU), reference (transformers on CPU, in-flight "
                    "batching) or synthetic (no model: the prompt's tokens replayed at a known rate)")
    tokenizer_dir: Path | None = Field(None, description="tokenizer directory (default: --model-dir, or the "
                                                         "engine's build manifest for tensorrt_llm)")
    model_dir: Path | None = Field(None, description="transformers checkpoint for the reference engine")
    engine_dir: Path | None = Field(None, description="TensorRT-LLM engine directory (tensorrt_llm), as "
                                                      "`ziya-trt build` writes it")
    front_door_names: tuple[str, ...] = Field(
        ("ziya",), json_schema_extra=NOT_A_FLAG,  # ziya-trt serve: --stock-names
        description="the text front doors' model names; the first is the OpenAI-compatible API's model")
    engine_model_name: str | None = Field(
        None, json_schema_extra=NOT_A_FLAG,  # ziya-trt serve: --stock-names
        description="the engine model's name (default: the engine kind's)")
    template: Literal["ziya", "chat_template"] = Field(
        "ziya", description="the prompt template and its server-side default stop strings: ziya, or the "
                            "tokenizer's own chat_template")
    max_batch_size: int = Field(8, ge=1, description="requests the engine runs at once (tensorrt_llm: the "
                                                     "engine's own, from its build manifest)")
    max_queue_size: int = Field(64, ge=0, description="requests waiting for a slot; beyond slots and queue, "
                                                      "new requests are refused as overloaded")
    max_input_len: int = Field(1024, ge=1, description="longest prompt in tokens (tensorrt_llm: the engine's)")
    max_seq_len: int = Field(2048, ge=2, description="longest prompt and reply together in tokens "
                                                     "(tensorrt_llm: the engine's)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="the reference engine's weights and activations")
    synthetic_tokens_per_s: float = Field(50.0, gt=0, description="synthetic: tokens a second, each stream")
    synthetic_first_token_s: float = Field(0.02, ge=0, description="synthetic: seconds before the first token")
    synthetic_schedule: Literal[SYNTHETIC_SCHEDULES] = Field(
        "stream", description="synthetic: each request on a clock of its own (stream), or one decoding step for "
                              "all running requests (step), as an in-flight batching engine emits")
    kv_cache_free_gpu_mem_fraction: float = Field(
        0.9, gt=0, le=1, json_schema_extra=NOT_A_FLAG,  # ziya-trt serve: the build plan's
        description="tensorrt_llm: the share of free GPU memory the KV cache takes")
    batch_scheduler_policy: Literal["guaranteed_no_evict", "max_utilization"] = Field(
        "guaranteed_no_evict", description="tensorrt_llm: admit a request only when its whole sequence fits the "
                                           "KV cache (guaranteed_no_evict), or fill it and pause requests when it "
                                           "runs out (max_utilization)")
    world_size: int = Field(
        1, ge=1, json_schema_extra=NOT_A_FLAG,  # ziya-trt serve: the build manifest's
        description="GPUs the engine runs on (tensorrt_llm: tp x pp, one tritonserver each)")
    drain_timeout_s: float = Field(
        20.0, ge=0, json_schema_extra=NOT_A_FLAG,  # ziya-trt serve: --exit-timeout less 5 s, at least 1 s
        description="seconds a stop gives running requests to finish before they end with shutting_down")
    cancel_check_ms: int = Field(
        50, ge=1, description="how often the Python models poll each request's cancellation, in ms (an IPC "
                              "round trip per request in Triton's Python backend)")
    send_threads: int = Field(4, ge=1, description="the engine stand-ins' response sender threads")
    grpc_url: str | None = Field(
        None, json_schema_extra=NOT_A_FLAG,
        description="the server's own gRPC address, which the front door calls the engine through (default: "
                    "told by the launcher at start, through the environment)")
    front_door_instances: int = Field(
        2, ge=1, description="front-door model instances (stub processes); one takes about 90 requests a second "
                             "on 2 busy cores")
    kv_cache_reuse: bool = Field(
        True, description="reuse earlier requests' KV blocks for a repeated prefix (multi-turn chat re-sends its "
                          "history): tensorrt_llm's enable_kv_cache_reuse, and the reference engine's own")
    chunked_context: bool = Field(
        True, description="tensorrt_llm: prefill a long prompt in chunks between decoding steps, so it does not "
                          "stall every stream (enable_chunked_context)")
    kv_block_tokens: int = Field(
        32, ge=1, description="tokens in a KV block (tensorrt_llm: the engine's tokens_per_block, read from it)")
    guided_decoding: bool = Field(
        True, description="structured outputs (OpenAI response_format json_object / json_schema, vLLM's guided_*): "
                          "guided_decoding_backend xgrammar with the tokenizer info JSON (tensorrt_llm: the one "
                          "`ziya-trt build` writes into the engine directory; reference: written into the model "
                          "repository); the synthetic engine has none")
    kv_reuse_bytes: int = Field(256 * 1024 * 1024, ge=0,
                                description="the reference engine: bytes of finished requests' KV blocks kept for "
                                            "reuse")
    http: HttpLimits = Field(default_factory=HttpLimits, description="the HTTP guard's limits")
    supervisor: SupervisorLimits = Field(default_factory=SupervisorLimits,
                                         description="the supervisor's limits: waits and restarts")

    @field_validator(*_PATHS, mode="before")
    @classmethod
    def _no_empty_path(cls, v):
        return v or None  # "" is no directory (Path("") would be the current one)

    @field_validator("grpc_url")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None and not is_host_port(v):
            raise ValueError("is not host:port")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "ServeConfig":
        problems = []
        if not self.tokenizer_dir:
            problems.append(f"the {self.engine.value} engine needs a tokenizer directory (--tokenizer-dir)")
        if self.engine is EngineKind.REFERENCE and not self.model_dir:
            problems.append("the reference engine needs model_dir")
        if self.engine is EngineKind.TENSORRT_LLM and not self.engine_dir:
            problems.append("the tensorrt_llm engine needs engine_dir")
        if not self.front_door_names:
            problems.append("at least one front door name is needed")
        if not self.max_input_len < self.max_seq_len:
            problems.append(f"need max_input_len ({self.max_input_len}) < max_seq_len ({self.max_seq_len})")
        if self.engine_name in self.front_door_names:
            problems.append(f"model name {self.engine_name!r} is used twice")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def guides(self) -> bool:
        """Whether the engine follows guides (structured outputs): guided decoding on, and an engine that has it."""
        return self.guided_decoding and self.engine is not EngineKind.SYNTHETIC

    @property
    def engine_name(self) -> str:
        return self.engine_model_name or self.engine.value

    @property
    def admission_budget(self) -> int:
        """Requests the fronts (every front-door instance and the OpenAI API together) admit at once: the
        engine's slots + queue (``serving/admission.py``)."""
        return self.max_batch_size + self.max_queue_size

    def resolved(self) -> "ServeConfig":
        """The same config with absolute paths (what a model process, started elsewhere, needs)."""
        return self.with_(**{k: Path(getattr(self, k)).resolve() for k in _PATHS if getattr(self, k)})

    # --- the serialised form the Python models read --------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"serve config: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"serve config: a JSON object is needed, not {type(d).__name__}")
        return cls(**d)

    def write(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.to_json() + "\n", encoding="utf-8")
        return p

    @classmethod
    def read(cls, path: str | Path) -> "ServeConfig":
        p = Path(path)
        try:
            return cls.from_json(p.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"serve config: cannot read {p.name} ({e.strerror})") from None

    @classmethod
    def for_model(cls, args: dict) -> "ServeConfig":
        """The config of a Python model, from the ``args`` Triton passes to ``initialize``."""
        return cls.read(Path(args["model_repository"]) / SERVE_CONFIG_FILE)
