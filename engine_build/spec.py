"""A LLaMA-architecture model's shape, read from its config.json: parameter count, weight bytes,
KV bytes per token and the tensor shapes a checkpoint must have. Ziya2-13B-Chat's shape is built in,
so a plan needs no download."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ziya_trt.errors import ZiyaError

from .fetch import DEFAULT_MODEL, FetchError, check_local_path, fetch_checkpoint, is_modelscope_id


class SpecError(ZiyaError):
    pass


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    dtype: str

    @classmethod
    def from_config(cls, cfg: dict) -> "ModelSpec":
        need = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"]
        missing = [k for k in need if k not in cfg]
        if missing:
            raise SpecError(f"config.json lacks {', '.join(missing)}")
        return cls(
            architecture=(cfg.get("architectures") or ["?"])[0],
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            num_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            intermediate_size=cfg["intermediate_size"],
            vocab_size=cfg["vocab_size"],
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            rope_theta=float(cfg.get("rope_theta", 10000.0)),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"),
        )

    @classmethod
    def from_dir(cls, d: str | Path) -> "ModelSpec":
        p = Path(d) / "config.json"
        if not p.exists():
            raise SpecError(f"{p} does not exist")
        return cls.from_config(json.loads(p.read_text()))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor a transformers LLaMA checkpoint holds, with its shape."""
        H, I, V, kv = self.hidden_size, self.intermediate_size, self.vocab_size, self.kv_dim
        s = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
        if not self.tie_word_embeddings:
            s["lm_head.weight"] = (V, H)
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            s |= {
                p + "self_attn.q_proj.weight": (H, H),
                p + "self_attn.k_proj.weight": (kv, H),
                p + "self_attn.v_proj.weight": (kv, H),
                p + "self_attn.o_proj.weight": (H, H),
                p + "mlp.gate_proj.weight": (I, H),
                p + "mlp.up_proj.weight": (I, H),
                p + "mlp.down_proj.weight": (H, I),
                p + "input_layernorm.weight": (H,),
                p + "post_attention_layernorm.weight": (H,),
            }
        return s

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder layers' matmuls (what FP8 quantizes)."""
        H, I, kv = self.hidden_size, self.intermediate_size, self.kv_dim
        return self.num_layers * (2 * H * H + 2 * kv * H + 3 * H * I)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def norm_params(self) -> int:
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params + self.norm_params

    def weight_bytes(self, dtype: str) -> int:
        """bf16: 2 bytes each. fp8: layer matmuls 1 byte (+ per-tensor scales); embeddings, lm_head and
        norms stay bf16 (quantize.py leaves lm_head alone unless --quantize_lm_head)."""
        if dtype == "bf16":
            return 2 * self.params
        if dtype == "fp8":
            return self.linear_params + 2 * (self.embedding_params + self.norm_params)
        raise SpecError(f"unknown dtype {dtype!r}")

    def kv_bytes_per_token(self, kv_dtype: str) -> int:
        """K and V for every layer: layers x 2 x kv_heads x head_dim x bytes."""
        return self.num_layers * 2 * self.kv_dim * (1 if kv_dtype == "fp8" else 2)

    def to_dict(self) -> dict:
        return asdict(self) | {"params": self.params}


# Fengshenbang/Ziya2-13B-Chat's config.json facts: LLaMA-2-13B with the vocabulary extended to 39410 tokens
# (a checkpoint whose embeddings are padded to 39424 rows says so in its own config.json, which then wins).
ZIYA2_13B_CHAT_CONFIG = dict(
    architectures=["LlamaForCausalLM"], hidden_size=5120, num_hidden_layers=40, num_attention_heads=40,
    num_key_value_heads=40, intermediate_size=13824, vocab_size=39410, max_position_embeddings=4096,
    rope_theta=1e4, rms_norm_eps=1e-6, tie_word_embeddings=False, torch_dtype="bfloat16")
ZIYA2_13B_CHAT = ModelSpec.from_config(ZIYA2_13B_CHAT_CONFIG)
BUILTIN_SHAPES = {DEFAULT_MODEL.lower(): ZIYA2_13B_CHAT}


@dataclass(frozen=True)
class ShapeSource:
    """A model's shape and where it came from; ``model_dir`` is absolute, None for a built-in shape."""

    spec: ModelSpec
    model_dir: Path | None
    note: str


def _from_cache(model: str, revision: str | None, cache_dir: str | Path | None) -> ShapeSource | None:
    try:
        d = fetch_checkpoint(model, revision, cache_dir, offline=True).resolve()
    except FetchError:
        return None
    return ShapeSource(ModelSpec.from_dir(d), d, f"shape from the ModelScope cache: {d}")


def resolve_shape(model: str, revision: str | None = None, cache_dir: str | Path | None = None) -> ShapeSource:
    """A local checkpoint, else the local ModelScope cache (never the network), else a built-in shape."""
    local = Path(model).expanduser()
    if local.is_dir():
        d = local.resolve()
        return ShapeSource(ModelSpec.from_dir(d), d, f"shape from {d / 'config.json'}")
    check_local_path(model)
    if not is_modelscope_id(model):
        raise SpecError(f"model: {model!r} is neither a checkpoint directory nor a ModelScope id (org/name)")
    cached = _from_cache(model, revision, cache_dir)
    if cached:
        return cached
    builtin = BUILTIN_SHAPES.get(model.lower())
    if builtin is None:
        raise SpecError(f"model: {model} is not in the local ModelScope cache and has no built-in shape; "
                        f"run `ziya-trt fetch --model {model}` first, or pass a checkpoint directory")
    return ShapeSource(builtin, None, f"no local checkpoint of {model}: planned from the built-in "
                                      f"Ziya2-13B-Chat shape (`ziya-trt build` fetches the checkpoint)")
