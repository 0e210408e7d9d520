"""GPUs the planner knows. Memory is what ``nvidia-smi`` reports as total (MiB)."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024**2


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int
    fp8: bool  # FP8 tensor cores (Ada, Hopper, Blackwell)
    bandwidth_tb_s: float
    arch: str

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB


GPUS = {
    g.name: g
    for g in (
        Gpu("a100-40gb", 40960, False, 1.56, "ampere"),
        Gpu("a100-80gb", 81920, False, 2.04, "ampere"),
        Gpu("l40s", 46068, True, 0.86, "ada"),
        Gpu("h100-80gb", 81559, True, 3.35, "hopper"),
        Gpu("h200", 143771, True, 4.8, "hopper"),
        Gpu("b200", 183359, True, 8.0, "blackwell"),
    )
}
ALIASES = {"h200-141gb": "h200", "h100": "h100-80gb", "a100": "a100-80gb", "b200-180gb": "b200"}


def get_gpu(name: str) -> Gpu:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in GPUS:
        from ziya_trt.errors import InvalidRequestError

        raise InvalidRequestError(f"gpu: unknown GPU {name!r}; known: {', '.join(GPUS)}", "gpu")
    return GPUS[key]
