"""``ServeConfig``: the one typed configuration of a served model repository.

The launcher renders the repository from it (``repo``), and the Python models read it back, whole,
from the JSON file rendered beside their ``config.pbtxt`` (``SERVE_CONFIG_FILE``): no parameter is
turned into a string and parsed again by hand.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from pathlib import Path

from ..engine.synthetic import SCHEDULES as SYNTHETIC_SCHEDULES
from ..errors import ZiyaError
from ..wire.grpc import is_host_port

SERVE_CONFIG_FILE = "serve_config.json"  # in each Python model's directory
_PATHS = ("tokenizer_dir", "model_dir", "engine_dir")


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
    # each request on its own clock ("stream"), or one decoding step for all of them ("step"): engine/synthetic.py
    synthetic_schedule: str = "stream"
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
    # KV-cache reuse across requests (multi-turn chat re-sends its history) and chunked context (a long prompt
    # does not stall every stream's decoding): tensorrt_llm's enable_kv_cache_reuse / enable_chunked_context;
    # the reference engine keeps up to kv_reuse_bytes of finished requests' KV blocks of kv_block_tokens tokens
    # (TensorRT-LLM's default tokens_per_block is 32)
    kv_cache_reuse: bool = True
    chunked_context: bool = True
    kv_block_tokens: int = 32
    kv_reuse_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine", EngineKind(self.engine))
        problems = []
        if not self.tokenizer_dir:
            problems.append(f"the {self.engine.value} engine needs a tokenizer directory (--tokenizer-dir)")
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
        if self.kv_block_tokens < 1 or self.kv_reuse_bytes < 0:
            problems.append("kv_block_tokens must be >= 1 and kv_reuse_bytes >= 0")
        if self.synthetic_schedule not in SYNTHETIC_SCHEDULES:
            problems.append(f"synthetic_schedule {self.synthetic_schedule!r} is not one of {', '.join(SYNTHETIC_SCHEDULES)}")
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

    @property
    def admission_budget(self) -> int:
        """Requests the fronts (every front-door instance and the OpenAI API together) admit at once: the
        engine's slots + queue (``serving/admission.py``)."""
        return self.max_batch_size + self.max_queue_size

    def resolved(self) -> "ServeConfig":
        """The same config with absolute paths (what a model process, started elsewhere, needs)."""
        return replace(self, **{k: Path(getattr(self, k)).resolve() for k in _PATHS if getattr(self, k)})

    # --- the serialised form the Python models read --------------------------------------------
    def to_json(self) -> str:
        d = asdict(self)
        d["engine"] = self.engine.value
        for k in _PATHS:
            d[k] = str(d[k]) if d[k] is not None else None
        return json.dumps(d, indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"serve config: not valid JSON ({e})") from None
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"serve config: unknown field(s) {', '.join(sorted(unknown))}")
        for k in _PATHS:
            if d.get(k) is not None:
                d[k] = Path(d[k])
        d["front_door_names"] = tuple(d.get("front_door_names", ()))
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
