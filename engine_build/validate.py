"""Check a checkpoint before spending GPU hours on it. Reads only file headers (safetensors) or
memory-maps (torch .bin); never loads the weights. Every problem is reported at once."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ziya_trt.errors import ZiyaError

from .spec import ModelSpec, SpecError

DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F8_E4M3": "float8_e4m3fn"}


class ProblemKind(str, Enum):
    CONFIG = "config"
    ARCHITECTURE = "architecture"
    MISSING_SHARD = "missing_shard"
    MISSING_TENSOR = "missing_tensor"
    SHAPE = "shape"
    DTYPE = "dtype"
    VOCAB = "vocab"
    TOKENIZER = "tokenizer"
    TRUNCATED = "truncated"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    message: str


class CheckpointError(ZiyaError):
    def __init__(self, path: str, problems: list[Problem]):
        self.path, self.problems = path, problems
        lines = "\n".join(f"  - [{p.kind.value}] {p.message}" for p in problems)
        super().__init__(f"checkpoint {path} has {len(problems)} problem(s):\n{lines}")

    def kinds(self) -> set[ProblemKind]:
        return {p.kind for p in self.problems}


@dataclass
class Report:
    path: str
    spec: ModelSpec | None = None
    tensors: int = 0
    weight_files: list[str] = field(default_factory=list)
    dtypes: set[str] = field(default_factory=set)
    tokenizer_vocab: int | None = None
    problems: list[Problem] = field(default_factory=list)

    def add(self, kind: ProblemKind, msg: str) -> None:
        self.problems.append(Problem(kind, msg))


def _raw_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


def safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    _, header = _raw_header(path)
    return {k: (v["dtype"], tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"}


def safetensors_missing_bytes(path: Path) -> int:
    """How many bytes the file is short of what its header says its tensors take (0: complete)."""
    n, header = _raw_header(path)
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return max(0, 8 + n + end - path.stat().st_size)


def torch_bin_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    import torch

    sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return {k: (str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in sd.items()}


def weight_files(d: Path, rep: Report) -> dict[str, Path]:
    """Tensor name -> file, from the index when there is one; records missing shards."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = d / index_name
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
            rep.weight_files = files
            for f in files:
                if not (d / f).exists():
                    rep.add(ProblemKind.MISSING_SHARD, f"{f} is listed in {index_name} but missing")
            return {k: d / f for k, f in weight_map.items()}
        if (d / single).exists():
            rep.weight_files = [single]
            return {"*": d / single}
    rep.add(ProblemKind.MISSING_SHARD, "no model.safetensors(.index.json) or pytorch_model.bin(.index.json)")
    return {}


def read_shapes(files: dict[str, Path], rep: Report | None = None) -> dict[str, tuple[str, tuple[int, ...]]]:
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for f in sorted(set(files.values())):
        if not f.exists():
            continue
        if f.suffix == ".safetensors":
            out |= safetensors_header(f)
            short = safetensors_missing_bytes(f)
            if short and rep is not None:
                rep.add(ProblemKind.TRUNCATED, f"{f.name} is {short:,} bytes shorter than its header says "
                                               f"(an interrupted download?)")
        else:
            out |= torch_bin_header(f)
    return out


def validate_checkpoint(path: str | Path, require_chat_tokens: bool = True, raise_on_problems: bool = True) -> Report:
    d = Path(path)
    rep = Report(str(d))
    try:
        rep.spec = spec = ModelSpec.from_dir(d)
    except (SpecError, json.JSONDecodeError) as e:
        rep.add(ProblemKind.CONFIG, str(e))
        spec = None
    if spec and spec.architecture != "LlamaForCausalLM":
        rep.add(ProblemKind.ARCHITECTURE, f"architecture is {spec.architecture}, expected LlamaForCausalLM")
    files = weight_files(d, rep)
    shapes = read_shapes(files, rep)
    rep.tensors = len(shapes)
    rep.dtypes = {DTYPES.get(dt, dt) for dt, _ in shapes.values()}
    if spec:
        expected = spec.shapes()
        missing = sorted(set(expected) - set(shapes))
        # a missing shard already explains its tensors
        lost = {k for k, f in files.items() if not f.exists()}
        for k in [m for m in missing if m not in lost][:10]:
            rep.add(ProblemKind.MISSING_TENSOR, f"{k} is not in any weight file")
        for k, shape in expected.items():
            if k in shapes and shapes[k][1] != shape:
                rep.add(ProblemKind.SHAPE, f"{k} has shape {list(shapes[k][1])}, config says {list(shape)}")
        if len(rep.dtypes) > 1 or (rep.dtypes and spec.dtype not in rep.dtypes):
            rep.add(ProblemKind.DTYPE, f"weights are {sorted(rep.dtypes)}, config says {spec.dtype}")
    _check_tokenizer(d, spec, rep, require_chat_tokens)
    if rep.problems and raise_on_problems:
        raise CheckpointError(str(d), rep.problems)
    return rep


def _check_tokenizer(d: Path, spec: ModelSpec | None, rep: Report, require_chat_tokens: bool) -> None:
    from ziya_trt.errors import TokenizerError
    from ziya_trt.text.tokenizer import load_tokenizer

    try:
        tok = load_tokenizer(d, require_chat_tokens=require_chat_tokens)
    except TokenizerError as e:
        for p in e.problems:
            rep.add(ProblemKind.TOKENIZER, p)
        return
    rep.tokenizer_vocab = tok.vocab_size
    if spec and tok.vocab_size > spec.vocab_size:
        rep.add(ProblemKind.VOCAB, f"tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {spec.vocab_size}")
    elif spec and spec.vocab_size - tok.vocab_size > 64:
        rep.add(ProblemKind.VOCAB, f"model vocab_size {spec.vocab_size} is {spec.vocab_size - tok.vocab_size} "
                                   f"larger than the tokenizer's {tok.vocab_size} (more than padding)")
