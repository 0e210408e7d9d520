"""GPUs the planner knows, and a GPU described by its memory alone.

``memory_mib`` is the total that ``nvidia-smi --query-gpu=memory.total`` reports (what CUDA can use,
after ECC on the GDDR cards), not the spec sheet's GB. Every row below was read from nvidia-smi output;
a row without such a reading must set ``memory_from="spec sheet"`` and convert the sheet's GB to MiB.
Bandwidth is the spec sheet's; arch decides FP8: Ada, Hopper and Blackwell have FP8 tensor cores,
Ampere has none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ziya_trt.errors import InvalidRequestError

MIB = 1024**2
DEFAULT_GPU = "h100-80gb"


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int
    fp8: bool  # FP8 tensor cores (Ada, Hopper, Blackwell)
    bandwidth_tb_s: float | None
    arch: str
    smi_name: str = ""  # the name nvidia-smi prints
    memory_from: str = "nvidia-smi"  # nvidia-smi | spec sheet | given (--gpu-mem-gib)
    note: str = ""  # an assumption the plan should repeat

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * MIB

    @property
    def memory_gib(self) -> float:
        return self.memory_mib / 1024

    @property
    def custom(self) -> bool:
        return self.memory_from == "given"


GPUS = {
    g.name: g
    for g in (
        Gpu("a10g-24gb", 23028, False, 0.6, "ampere", "NVIDIA A10G"),
        Gpu("l4-24gb", 23034, True, 0.3, "ada", "NVIDIA L4"),
        Gpu("l40s", 46068, True, 0.864, "ada", "NVIDIA L40S"),
        Gpu("a100-40gb", 40960, False, 1.555, "ampere", "NVIDIA A100-SXM4-40GB"),
        Gpu("a100-80gb", 81920, False, 2.039, "ampere", "NVIDIA A100-SXM4-80GB"),
        Gpu("h100-pcie-80gb", 81559, True, 2.0, "hopper", "NVIDIA H100 PCIe"),
        Gpu("h100-80gb", 81559, True, 3.35, "hopper", "NVIDIA H100 80GB HBM3"),  # SXM
        Gpu("h100-nvl-94gb", 95830, True, 3.9, "hopper", "NVIDIA H100 NVL"),
        Gpu("h20-96gb", 97871, True, 4.0, "hopper", "NVIDIA H20"),
        Gpu("h200", 143771, True, 4.8, "hopper", "NVIDIA H200"),
        Gpu("b200", 183359, True, 8.0, "blackwell", "NVIDIA B200"),
        Gpu("gb200", 189471, True, 8.0, "blackwell", "NVIDIA GB200"),  # per GPU of a GB200 superchip
    )
}
ALIASES = {
    "a10g": "a10g-24gb", "l4": "l4-24gb", "l40s-48gb": "l40s", "a100": "a100-80gb",
    "h100": "h100-80gb", "h100-sxm": "h100-80gb", "h100-sxm-80gb": "h100-80gb", "h100-pcie": "h100-pcie-80gb",
    "h100-nvl": "h100-nvl-94gb", "h20": "h20-96gb", "h200-141gb": "h200", "b200-180gb": "b200",
    "gb200-186gb": "gb200",
}


def lookup(name: str) -> Gpu | None:
    key = name.lower()
    return GPUS.get(ALIASES.get(key, key))


def get_gpu(name: str) -> Gpu:
    g = lookup(name)
    if g is None:
        raise InvalidRequestError(f"gpu: unknown GPU {name!r}; known: {', '.join(GPUS)} "
                                  f"(`ziya-trt plan --list-gpus`), or give its memory with --gpu-mem-gib", "gpu")
    return g


def aliases_of(name: str) -> list[str]:
    return [a for a, n in ALIASES.items() if n == name]


def custom_gpu(name: str | None, mem_gib: float, fp8: bool | None) -> Gpu:
    """A GPU the table lacks, from its total memory in GiB; without ``fp8`` it is taken to have no FP8."""
    if mem_gib <= 0:
        raise InvalidRequestError(f"gpu_mem_gib: must be positive (got {mem_gib:g})", "gpu_mem_gib")
    note = "" if fp8 is not None else "FP8 tensor cores assumed absent; pass --gpu-fp8 if it has them"
    return Gpu(name or f"custom-{mem_gib:g}gib", round(mem_gib * 1024), bool(fp8), None, "unknown",
               memory_from="given", note=note)


def resolve_gpu(name: str | None = None, mem_gib: float | None = None, fp8: bool | None = None) -> Gpu:
    """``--gpu`` / ``--gpu-mem-gib`` / ``--gpu-fp8``: a table GPU (its memory replaced when
    ``mem_gib`` is given), or a GPU described by ``mem_gib`` alone."""
    known = lookup(name) if name else None
    if known is None and mem_gib is None:
        known = get_gpu(name or DEFAULT_GPU)
    if known is None:
        return custom_gpu(name, mem_gib, fp8)
    if fp8 is not None and fp8 != known.fp8:
        raise InvalidRequestError(f"gpu_fp8: {known.name} ({known.arch}) "
                                  f"{'has' if known.fp8 else 'has no'} FP8 tensor cores", "gpu_fp8")
    if mem_gib is None:
        return known
    return replace(custom_gpu(known.name, mem_gib, known.fp8), bandwidth_tb_s=known.bandwidth_tb_s,
                   arch=known.arch, smi_name=known.smi_name)
