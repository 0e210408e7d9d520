"""The typed build plan: from a model's shape, a GPU and a workload to engine limits that fit.

Memory per GPU = weights / (tp x pp) + runtime reserve + activations for max_num_tokens; what is left,
times kv_cache_free_gpu_mem_fraction, holds the paged KV cache. max_batch_size is the number of
full-length (isl + osl) sequences that cache holds, so the guaranteed_no_evict scheduler never
has to pause a request.

A plan that does not fit names each problem, and suggests only changes that address one of them and
that were checked by planning again with the change (one change, or two together).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path

from ziya_trt.errors import InvalidRequestError

from .gpus import GPUS, Gpu, get_gpu
from .spec import ModelSpec

GIB = 1024**3
RUNTIME_RESERVE_BYTES = 2 * GIB  # CUDA context, cuBLAS/TensorRT workspaces, NCCL buffers
KV_FRACTION = 0.9  # kv_cache_free_gpu_mem_fraction
MAX_NUM_TOKENS_CAP = 8192  # TensorRT-LLM's default and its performance guide's usual choice
MAX_BATCH_CAP = 2048  # BuildConfig's default max_batch_size
VOCAB_MULTIPLE = 64
MAX_TP = 8  # GPUs in one node
MAX_SUGGESTIONS = 5
NOTHING_FITS = ("no change of --dtype, --tp, --pp, --gpu, --isl/--osl or --min-batch (one or two at a time) "
                "makes this fit")


class Problem(str, Enum):
    TP = "tp"  # tp does not divide the heads
    PP = "pp"  # pp does not divide the layers
    NO_FP8 = "no_fp8"  # fp8 on a GPU without FP8 tensor cores
    POSITIONS = "positions"  # isl + osl beyond the model's positions
    WEIGHTS = "weights"  # weights + reserve + activations exceed the GPU
    BATCH = "batch"  # the KV cache holds fewer than min_batch full requests


@dataclass(frozen=True)
class Workload:
    isl: int = 2048  # input tokens per request
    osl: int = 512  # output tokens per request
    min_batch: int = 8  # fewest concurrent full-length requests the plan must hold

    def __post_init__(self):
        for k in ("isl", "osl", "min_batch"):
            if getattr(self, k) < 1:
                raise InvalidRequestError(f"{k}: must be at least 1", k)

    @property
    def seq_len(self) -> int:
        return self.isl + self.osl


@dataclass(frozen=True)
class Setup:
    """What one plan is made from."""

    spec: ModelSpec
    gpu: Gpu
    dtype: str = "bf16"  # bf16 | fp8 (weights and KV cache)
    tp: int = 1
    pp: int = 1
    workload: Workload = Workload()

    def __post_init__(self):
        if self.dtype not in ("bf16", "fp8"):
            raise InvalidRequestError(f"dtype: {self.dtype!r}; use bf16 or fp8", "dtype")
        if self.tp < 1 or self.pp < 1 or self.tp & (self.tp - 1):
            raise InvalidRequestError(f"tp/pp: tp must be a power of two and both >= 1 (got tp={self.tp}, "
                                      f"pp={self.pp})", "tp")

    @property
    def world_size(self) -> int:
        return self.tp * self.pp


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU."""

    weights: int
    kv_per_token: int
    activations: int
    free: int  # after weights, reserve and activations
    kv_cache: int
    kv_tokens: int
    full_requests: int  # full-length requests the KV cache holds (capped at MAX_BATCH_CAP)
    max_num_tokens: int


@dataclass(frozen=True)
class BuildPlan:
    model_dir: str  # absolute checkpoint directory; "" when planned from a built-in shape
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
    # added later; plans saved before have their defaults
    model_id: str = ""  # the ModelScope id planned for, if one was given
    gpu_memory_mib: int = 0
    problem_kinds: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(self.to_json() + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> "BuildPlan":
        """Reads plans of any version: unknown keys are dropped, missing new ones take their defaults."""
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        data["model_dir"] = _old_relative_dir(data.get("model_dir", ""), Path(path))
        # plans saved before had it on for fp8, which TensorRT-LLM's builder turns off again
        data["norm_quant_fusion"] = data.get("norm_quant_fusion", False) and norm_quant_fusion_applies(
            data.get("dtype", ""), data.get("reduce_fusion", False), data.get("model", {}).get("architecture", ""))
        return cls(**data)


def norm_quant_fusion_applies(quant: str, reduce_fusion: bool, architecture: str) -> bool:
    """Whether ``--norm_quant_fusion enable`` (RMSNorm fused with the quantization of its output) survives
    TensorRT-LLM 1.2's builder, which turns it off unless the quantization is NVFP4, the model is a
    LlamaForCausalLM and reduce_fusion is off (tensorrt_llm/builder.py, ``build``). This project builds bf16
    and fp8, so never: fp8 gets no RMSNorm-quantize fusion."""
    return quant == "nvfp4" and not reduce_fusion and architecture == "LlamaForCausalLM"


def _old_relative_dir(model_dir: str, plan_path: Path) -> str:
    """Plans saved before model_dir was absolute hold a path relative to where `plan` ran: kept as it
    was where it exists from here, else taken beside the plan file where it exists there."""
    d = Path(model_dir)
    if not model_dir or d.is_absolute() or d.is_dir():
        return model_dir
    beside = plan_path.resolve().parent / d
    return str(beside) if beside.is_dir() else model_dir


def activation_bytes(spec: ModelSpec, max_num_tokens: int, tp: int) -> int:
    """Peak activations of one engine step: per token, the MLP's gate/up outputs and a few hidden-size
    buffers (bf16), split across tp; plus fp32 logits for the tokens that sample."""
    per_token = (3 * spec.intermediate_size + 6 * spec.hidden_size) * 2 // tp
    return max_num_tokens * per_token


def memory(s: Setup) -> Memory:
    world = s.world_size
    weights = -(-s.spec.weight_bytes(s.dtype) // world)
    kv_tok = -(-s.spec.kv_bytes_per_token(s.dtype) // world)  # layers split by pp, heads by tp
    max_num_tokens = max(s.workload.isl, MAX_NUM_TOKENS_CAP)
    act = activation_bytes(s.spec, max_num_tokens, s.tp)
    free = s.gpu.memory_bytes - weights - RUNTIME_RESERVE_BYTES - act
    kv_bytes = max(0, int(free * KV_FRACTION))
    kv_tokens = kv_bytes // kv_tok
    full = min(MAX_BATCH_CAP, kv_tokens // s.workload.seq_len)
    return Memory(weights, kv_tok, act, free, kv_bytes, kv_tokens, full, max_num_tokens)


def find_problems(s: Setup, m: Memory) -> list[tuple[Problem, str]]:
    spec, g, w = s.spec, s.gpu, s.workload
    out = []
    if spec.num_heads % s.tp or spec.num_kv_heads % s.tp:
        out.append((Problem.TP, (f"tp={s.tp} does not divide {spec.num_heads} attention heads / "
                                 f"{spec.num_kv_heads} KV heads")))
    if spec.num_layers % s.pp:
        out.append((Problem.PP, f"pp={s.pp} does not divide {spec.num_layers} layers"))
    if s.dtype == "fp8" and not g.fp8:
        why = "assumed for a GPU given by its memory" if g.note else g.arch
        out.append((Problem.NO_FP8, f"{g.name} has no FP8 tensor cores ({why})"))
    if w.seq_len > spec.max_position_embeddings:
        out.append((Problem.POSITIONS, (f"isl + osl = {w.seq_len} exceeds the model's "
                                        f"{spec.max_position_embeddings} positions")))
    if m.free <= 0:
        out.append((Problem.WEIGHTS, (f"weights ({m.weights / 1e9:.1f} GB per GPU) + reserve + activations do "
                                      f"not fit in {g.memory_bytes / 1e9:.1f} GB ({g.memory_gib:.1f} GiB)")))
    elif m.full_requests < w.min_batch:
        out.append((Problem.BATCH, (f"KV cache holds {m.kv_tokens} tokens = {m.full_requests} full-length "
                                    f"({w.seq_len}-token) requests, fewer than min_batch {w.min_batch}")))
    return out


def assess(s: Setup, model_dir: str = "", notes: tuple[str, ...] = (), model_id: str = "") -> BuildPlan:
    """The plan for one setup, without suggestions."""
    m = memory(s)
    found = find_problems(s, m)
    gpu_notes = [f"{s.gpu.name}: {s.gpu.note}"] if s.gpu.note else []
    return BuildPlan(
        model_dir=model_dir,
        model=s.spec.to_dict(),
        gpu=s.gpu.name,
        dtype=s.dtype,
        tp=s.tp,
        pp=s.pp,
        workload=asdict(s.workload),
        weight_bytes_per_gpu=m.weights,
        kv_bytes_per_token_per_gpu=m.kv_per_token,
        activation_bytes_per_gpu=m.activations,
        runtime_reserve_bytes=RUNTIME_RESERVE_BYTES,
        kv_cache_bytes_per_gpu=m.kv_cache,
        kv_cache_tokens=m.kv_tokens,
        kv_cache_free_gpu_mem_fraction=KV_FRACTION,
        max_batch_size=max(1, m.full_requests),
        max_num_tokens=m.max_num_tokens,
        max_input_len=s.workload.isl,
        max_seq_len=s.workload.seq_len,
        vocab_size=s.spec.vocab_size,
        padded_vocab_size=-(-s.spec.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE,
        # TensorRT-LLM pads the vocabulary when it is split across tp ranks
        vocab_padding_needed=s.tp > 1 and s.spec.vocab_size % s.tp != 0,
        norm_quant_fusion=norm_quant_fusion_applies(s.dtype, s.tp > 1, s.spec.architecture),  # never for bf16/fp8
        reduce_fusion=s.tp > 1,  # fuse the all-reduce with RMSNorm
        fits=not found,
        problems=[text for _, text in found],
        model_id=model_id,
        gpu_memory_mib=s.gpu.memory_mib,
        problem_kinds=[kind.value for kind, _ in found],
        notes=[*notes, *gpu_notes],
    )


def make_plan(model_dir: str | Path | None, gpu: str | Gpu, dtype: str = "bf16", tp: int = 1, pp: int = 1,
              workload: Workload = Workload(), spec: ModelSpec | None = None, *, notes: tuple[str, ...] = (),
              model_id: str = "") -> BuildPlan:
    """``model_dir`` is stored absolute; with ``spec`` it may be None (a shape known without a checkpoint)."""
    if spec is None and not model_dir:
        raise InvalidRequestError("model_dir: a checkpoint directory or a model spec is needed", "model_dir")
    g = gpu if isinstance(gpu, Gpu) else get_gpu(gpu)
    s = Setup(spec or ModelSpec.from_dir(model_dir), g, dtype, tp, pp, workload)
    where = str(Path(model_dir).expanduser().resolve()) if model_dir else ""
    plan = assess(s, where, tuple(notes), model_id)
    return plan if plan.fits else replace(plan, suggestions=suggest(s, plan))


# --- suggestions: changes that address a problem, each checked by planning again -----------------------


@dataclass(frozen=True)
class Change:
    flags: tuple[tuple[str, str], ...]  # (flag, value) pairs, value "" for a bare flag
    why: str
    setup: Setup

    def then(self, other: Change) -> Change:
        """This change, then ``other`` (made from this one's setup)."""
        mine, theirs = dict(self.flags), dict(other.flags)
        why = other.why if set(mine) <= set(theirs) else f"{self.why}; {other.why}"
        return Change(tuple((mine | theirs).items()), why, other.setup)

    def describe(self, plan: BuildPlan) -> str:
        flags = " ".join(f"{k} {v}".strip() for k, v in self.flags)
        return (f"{flags}: {self.why}; then it fits, max_batch_size {plan.max_batch_size} "
                f"({plan.kv_cache_tokens:,} KV tokens per GPU)")


def _change(s: Setup, why: str, flags: dict[str, str], **setup_fields) -> Change:
    return Change(tuple(flags.items()), why, replace(s, **setup_fields))


def _workload_change(s: Setup, why: str, isl: int, osl: int, min_batch: int | None = None) -> Change:
    w = s.workload
    new = Workload(isl, osl, min_batch or w.min_batch)
    flags = {f: str(getattr(new, k)) for f, k in (("--isl", "isl"), ("--osl", "osl"), ("--min-batch", "min_batch"))
             if getattr(new, k) != getattr(w, k)}
    return _change(s, why, flags, workload=new)


def _within_positions(s: Setup) -> list[Change]:
    P, w = s.spec.max_position_embeddings, s.workload
    why = f"isl + osl = {P} fits the model's {P} positions"
    out = []
    if w.osl < P:
        out.append(_workload_change(s, why, P - w.osl, w.osl))
    if w.isl < P:
        out.append(_workload_change(s, why, w.isl, P - w.isl))
    if not out:
        isl = max(1, w.isl * P // w.seq_len)
        out.append(_workload_change(s, why, isl, P - isl))
    return out


def _fewer_tokens(s: Setup, plan: BuildPlan) -> list[Change]:
    """The KV cache is too small for min_batch: ask for fewer requests, or shorter ones."""
    w, out = s.workload, []
    held = plan.kv_cache_tokens // w.seq_len
    if held >= 1:
        n = f"{held} full-length request{'s' if held > 1 else ''}"
        out.append(_workload_change(s, f"the KV cache holds {n}", w.isl, w.osl, held))
    per_request = plan.kv_cache_tokens // w.min_batch
    if per_request >= 2:
        isl = max(1, w.isl * per_request // w.seq_len)
        osl = max(1, per_request - isl)
        out.append(_workload_change(s, f"{w.min_batch} requests of {isl + osl} tokens fit the KV cache", isl, osl))
    return out


def _tp_divides(spec: ModelSpec, tp: int) -> bool:
    return tp <= MAX_TP and spec.num_heads % tp == 0 and spec.num_kv_heads % tp == 0


def _other_gpu(s: Setup, bigger: bool) -> list[Change]:
    """The smallest GPU in the table (with FP8 for an fp8 plan; with more memory if ``bigger``) that fits."""
    for g in sorted(GPUS.values(), key=lambda g: (g.memory_mib, g.name)):
        if g.name == s.gpu.name or (s.dtype == "fp8" and not g.fp8) or (bigger and g.memory_mib <= s.gpu.memory_mib):
            continue
        drop = " (instead of --gpu-mem-gib)" if s.gpu.custom else ""
        c = _change(s, f"{g.name} has {g.memory_gib:.1f} GiB{' and FP8' if s.dtype == 'fp8' else ''}{drop}",
                    {"--gpu": g.name}, gpu=g)
        if assess(c.setup).fits:
            return [c]
    return []


def _more_memory(s: Setup) -> list[Change]:
    out = []
    if s.dtype == "bf16" and s.gpu.fp8:
        out.append(_change(s, "FP8 halves the weights and the KV cache", {"--dtype": "fp8"}, dtype="fp8"))
    if _tp_divides(s.spec, s.tp * 2):
        out.append(_change(s, f"splits the weights and KV cache over {s.tp * 2 * s.pp} GPUs",
                           {"--tp": str(s.tp * 2)}, tp=s.tp * 2))
    return out + _other_gpu(s, bigger=True)


def _without_fp8(s: Setup) -> list[Change]:
    out = [_change(s, f"{s.gpu.name} has no FP8 tensor cores", {"--dtype": "bf16"}, dtype="bf16")]
    if s.gpu.custom and s.gpu.note:
        out.append(_change(s, "if this GPU does have FP8 tensor cores", {"--gpu-fp8": ""},
                           gpu=replace(s.gpu, fp8=True, note="")))
    return out + _other_gpu(s, bigger=False)


def _valid_parallelism(s: Setup, problem: Problem) -> list[Change]:
    if problem is Problem.TP:
        ok = [t for t in (1, 2, 4, 8) if t != s.tp and _tp_divides(s.spec, t)]
        return [_change(s, f"tp={t} divides the heads", {"--tp": str(t)}, tp=t)
                for t in sorted(ok, key=lambda t: abs(t - s.tp))[:2]]
    ok = [p for p in range(1, MAX_TP + 1) if p != s.pp and s.spec.num_layers % p == 0]
    return [_change(s, f"pp={p} divides {s.spec.num_layers} layers", {"--pp": str(p)}, pp=p)
            for p in sorted(ok, key=lambda p: abs(p - s.pp))[:2]]


def candidates(s: Setup, plan: BuildPlan) -> list[Change]:
    """Changes that address the plan's problems, most direct first; none is checked yet."""
    kinds = {Problem(k) for k in plan.problem_kinds}
    out = []
    if Problem.POSITIONS in kinds:
        out += _within_positions(s)
    if Problem.NO_FP8 in kinds:
        out += _without_fp8(s)
    for p in (Problem.TP, Problem.PP):
        if p in kinds:
            out += _valid_parallelism(s, p)
    if kinds & {Problem.WEIGHTS, Problem.BATCH}:
        out += _more_memory(s)
    if Problem.BATCH in kinds and Problem.POSITIONS not in kinds:  # first bring isl + osl within positions
        out += _fewer_tokens(s, plan)
    return out


def suggest(s: Setup, plan: BuildPlan) -> list[str]:
    """Single changes that make the plan fit, then pairs of changes (none that holds a single change
    already said); each is re-planned before it is said."""
    found: dict[Setup, str] = {}
    singles, unfit = [], []
    for c in candidates(s, plan):
        p = assess(c.setup)
        if p.fits:
            found.setdefault(c.setup, c.describe(p))
            singles.append(set(c.flags))
        else:
            unfit.append((c, p))
    for c, p in unfit:
        for c2 in candidates(c.setup, p):
            both = c.then(c2)
            if c2.setup == s or any(one <= set(both.flags) for one in singles):
                continue
            p2 = assess(c2.setup)
            if p2.fits:
                found.setdefault(c2.setup, both.describe(p2))
    return list(found.values())[:MAX_SUGGESTIONS] or [NOTHING_FITS]
