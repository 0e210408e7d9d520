"""The typed build plan: from a model's shape, a GPU and a workload to engine limits that fit.

Memory per GPU = weights / (tp x pp) + runtime reserve + activations for max_num_tokens; what is left,
times kv_cache_free_gpu_mem_fraction, holds the paged KV cache. max_batch_size is the number of
full-length (isl + osl) sequences that cache holds, so the guaranteed_no_evict scheduler never
has to pause a request.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ziya_trt.errors import InvalidRequestError

from .gpus import Gpu, get_gpu
from .spec import ModelSpec

GIB = 1024**3
RUNTIME_RESERVE_BYTES = 2 * GIB  # CUDA context, cuBLAS/TensorRT workspaces, NCCL buffers
KV_FRACTION = 0.9  # kv_cache_free_gpu_mem_fraction
MAX_NUM_TOKENS_CAP = 8192  # TensorRT-LLM's default and its performance guide's usual choice
MAX_BATCH_CAP = 2048  # BuildConfig's default max_batch_size
VOCAB_MULTIPLE = 64


@dataclass(frozen=True)
class Workload:
    isl: int = 2048  # input tokens per request
    osl: int = 512  # output tokens per request
    min_batch: int = 8  # fewest concurrent full-length requests the plan must hold

    def __post_init__(self):
        for k in ("isl", "osl", "min_batch"):
            if getattr(self, k) < 1:
                raise InvalidRequestError(f"{k}: must be at least 1", k)


@dataclass(frozen=True)
class BuildPlan:
    model_dir: str
    model: dict
    gpu: str
    dtype: str  # bf16 | fp8 (weights and KV cache)
    tp: int
    pp: int
    workload: dict
    weight_bytes_per_gpu: int
    kv_bytes_per_token_per_gpu: int
    activation_bytes_per_gpu: int
    runtime_reserve_bytes: int
    kv_cache_bytes_per_gpu: int
    kv_cache_tokens: int
    kv_cache_free_gpu_mem_fraction: float
    max_batch_size: int
    max_num_tokens: int
    max_input_len: int
    max_seq_len: int
    vocab_size: int
    padded_vocab_size: int
    vocab_padding_needed: bool
    norm_quant_fusion: bool
    reduce_fusion: bool
    fits: bool
    problems: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.to_json() + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> "BuildPlan":
        return cls(**json.loads(Path(path).read_text()))


def activation_bytes(spec: ModelSpec, max_num_tokens: int, tp: int) -> int:
    """Peak activations of one engine step: per token, the MLP's gate/up outputs and a few hidden-size
    buffers (bf16), split across tp; plus fp32 logits for the tokens that sample."""
    per_token = (3 * spec.intermediate_size + 6 * spec.hidden_size) * 2 // tp
    return max_num_tokens * per_token


def make_plan(model_dir: str | Path, gpu: str | Gpu, dtype: str = "bf16", tp: int = 1, pp: int = 1,
              workload: Workload = Workload(), spec: ModelSpec | None = None) -> BuildPlan:
    if dtype not in ("bf16", "fp8"):
        raise InvalidRequestError(f"dtype: {dtype!r}; use bf16 or fp8", "dtype")
    if tp < 1 or pp < 1 or tp & (tp - 1):
        raise InvalidRequestError(f"tp/pp: tp must be a power of two and both >= 1 (got tp={tp}, pp={pp})", "tp")
    g = gpu if isinstance(gpu, Gpu) else get_gpu(gpu)
    spec = spec or ModelSpec.from_dir(model_dir)
    problems, suggestions = [], []
    if spec.num_heads % tp or spec.num_kv_heads % tp:
        problems.append(f"tp={tp} does not divide {spec.num_heads} attention heads / {spec.num_kv_heads} KV heads")
    if spec.num_layers % pp:
        problems.append(f"pp={pp} does not divide {spec.num_layers} layers")
    if dtype == "fp8" and not g.fp8:
        problems.append(f"{g.name} has no FP8 tensor cores ({g.arch}); use bf16")
    max_seq_len = workload.isl + workload.osl
    if max_seq_len > spec.max_position_embeddings:
        problems.append(
            f"isl + osl = {max_seq_len} exceeds the model's {spec.max_position_embeddings} positions"
        )
    world = tp * pp
    weights = -(-spec.weight_bytes(dtype) // world)
    kv_tok = -(-spec.kv_bytes_per_token(dtype) // world)  # layers split by pp, heads by tp
    max_num_tokens = max(workload.isl, MAX_NUM_TOKENS_CAP)
    act = activation_bytes(spec, max_num_tokens, tp)
    free = g.memory_bytes - weights - RUNTIME_RESERVE_BYTES - act
    kv_bytes = max(0, int(free * KV_FRACTION))
    kv_tokens = kv_bytes // kv_tok
    max_batch = min(MAX_BATCH_CAP, kv_tokens // max_seq_len)
    if free <= 0:
        problems.append(
            f"weights ({weights / 1e9:.1f} GB per GPU) + reserve + activations do not fit in "
            f"{g.memory_bytes / 1e9:.1f} GB"
        )
    elif max_batch < workload.min_batch:
        problems.append(
            f"KV cache holds {kv_tokens} tokens = {max_batch} full-length ({max_seq_len}-token) requests, "
            f"fewer than min_batch {workload.min_batch}"
        )
    fits = not problems
    if not fits:
        if dtype == "bf16" and g.fp8:
            suggestions.append("use --dtype fp8 (halves weights and KV cache)")
        if tp * 2 <= 8 and spec.num_heads % (tp * 2) == 0:
            suggestions.append(f"use --tp {tp * 2}")
        suggestions.append("or lower --isl/--osl or --min-batch")
    padded = -(-spec.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    return BuildPlan(
        model_dir=str(model_dir),
        model=spec.to_dict(),
        gpu=g.name,
        dtype=dtype,
        tp=tp,
        pp=pp,
        workload=asdict(workload),
        weight_bytes_per_gpu=weights,
        kv_bytes_per_token_per_gpu=kv_tok,
        activation_bytes_per_gpu=act,
        runtime_reserve_bytes=RUNTIME_RESERVE_BYTES,
        kv_cache_bytes_per_gpu=kv_bytes,
        kv_cache_tokens=kv_tokens,
        kv_cache_free_gpu_mem_fraction=KV_FRACTION,
        max_batch_size=max(1, max_batch),
        max_num_tokens=max_num_tokens,
        max_input_len=workload.isl,
        max_seq_len=max_seq_len,
        vocab_size=spec.vocab_size,
        padded_vocab_size=padded,
        # TensorRT-LLM pads the vocabulary when it is split across tp ranks
        vocab_padding_needed=tp > 1 and spec.vocab_size % tp != 0,
        # fp8: fuse RMSNorm with the FP8 quantization of its output; tp: fuse all-reduce with RMSNorm
        norm_quant_fusion=dtype == "fp8",
        reduce_fusion=tp > 1,
        fits=fits,
        problems=problems,
        suggestions=suggestions,
    )
