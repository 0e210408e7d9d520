"""The exact TensorRT-LLM 1.2.1 commands (and the equivalent LLM-API settings) for a BuildPlan.

Default path: the checkpoint CLIs (``convert_checkpoint.py`` or ``quantize.py``, then
``trtllm-build``). Their flags were read from the 1.2 source; the LLM-API field names were not,
so that path is generated for reference but not the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .plan import BuildPlan

CALIB_DEFAULT = Path(__file__).parent / "data" / "calib_zh_en"
CONVERT = "examples/models/core/llama/convert_checkpoint.py"
QUANTIZE = "examples/quantization/quantize.py"
CALIB_SIZE = 256  # calibration samples (quantize.py --calib_size; the LLM API's calib_batches of one sample each)
# TensorRT-LLM 1.x's plain ``tensorrt_llm.LLM`` is the PyTorch backend; the class that builds and saves TensorRT
# engines (takes build_config, quant_config, calib_config) is this one (contracts: llm_api.backend_selection)
LLM_API_CLASS = "tensorrt_llm._tensorrt_engine.LLM"


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]  # program + flags; scripts are relative to the TensorRT-LLM source tree

    def flags(self) -> dict[str, str | None]:
        """``--flag value`` pairs (value None for store_true flags)."""
        out: dict[str, str | None] = {}
        args = list(self.argv)
        i = 0
        while i < len(args):
            a = args[i]
            if a.startswith("--"):
                nxt = args[i + 1] if i + 1 < len(args) else None
                if nxt is not None and not nxt.startswith("--"):
                    out[a] = nxt
                    i += 2
                    continue
                out[a] = None
            i += 1
        return out


def calib_max_seq_length(plan: BuildPlan) -> int:
    """Tokens per calibration sample: the plan's longest input, at most 2048."""
    return min(plan.max_input_len, 2048)


def checkpoint_step(plan: BuildPlan, ckpt_dir: Path, calib: Path = CALIB_DEFAULT,
                    calib_size: int = CALIB_SIZE) -> Step:
    tp, pp = str(plan.tp), str(plan.pp)
    if plan.dtype == "bf16":
        return Step("convert", ("python3", CONVERT, "--model_dir", plan.model_dir, "--output_dir", str(ckpt_dir),
                                "--dtype", "bfloat16", "--tp_size", tp, "--pp_size", pp))
    return Step("quantize", (
        "python3", QUANTIZE, "--model_dir", plan.model_dir, "--output_dir", str(ckpt_dir), "--dtype", "bfloat16",
        "--qformat", "fp8", "--kv_cache_dtype", "fp8", "--calib_dataset", str(calib), "--calib_size", str(calib_size),
        "--calib_max_seq_length", str(calib_max_seq_length(plan)), "--tp_size", tp, "--pp_size", pp,
    ))


def build_step(plan: BuildPlan, ckpt_dir: Path, engine_dir: Path, workers: int | None = None) -> Step:
    plugin_dtype = "bfloat16"
    argv = [
        "trtllm-build", "--checkpoint_dir", str(ckpt_dir), "--output_dir", str(engine_dir),
        "--gpt_attention_plugin", plugin_dtype,
        # fp8: let TensorRT pick FP8 GEMM kernels; bf16: the gemm plugin is faster for LLaMA
        "--gemm_plugin", "auto" if plan.dtype == "fp8" else plugin_dtype,
        "--context_fmha", "enable",
        "--use_paged_context_fmha", "enable",
        "--kv_cache_type", "paged",
        "--remove_input_padding", "enable",
        "--use_fused_mlp", "enable",
        "--max_batch_size", str(plan.max_batch_size),
        "--max_input_len", str(plan.max_input_len),
        "--max_seq_len", str(plan.max_seq_len),
        "--max_num_tokens", str(plan.max_num_tokens),
        "--max_beam_width", "1",
        "--workers", str(workers or plan.world_size),
    ]
    if plan.dtype == "fp8":
        argv += ["--use_fp8_context_fmha", "enable"]
    if plan.norm_quant_fusion:
        argv += ["--norm_quant_fusion", "enable"]
    if plan.reduce_fusion:
        argv += ["--reduce_fusion", "enable"]
    return Step("build", tuple(argv))


def build_steps(plan: BuildPlan, work_dir: Path, engine_dir: Path, calib: Path = CALIB_DEFAULT) -> list[Step]:
    ckpt = work_dir / "trtllm_checkpoint"
    return [checkpoint_step(plan, ckpt, calib), build_step(plan, ckpt, engine_dir)]


def llm_api_settings(plan: BuildPlan, calib: Path = CALIB_DEFAULT) -> dict:
    """The same build through the LLM API's TensorRT-engine class, ``LLM_API_CLASS`` (field names from docs and
    recall: contracts/trtllm-1.2.json ``llm_api``), with the calibration the quantize step uses."""
    d = {
        "class": LLM_API_CLASS,
        "BuildConfig": {
            "max_batch_size": plan.max_batch_size,
            "max_input_len": plan.max_input_len,
            "max_seq_len": plan.max_seq_len,
            "max_num_tokens": plan.max_num_tokens,
            "max_beam_width": 1,
        },
        "KvCacheConfig": {"free_gpu_memory_fraction": plan.kv_cache_free_gpu_mem_fraction},
        "LLM": {"tensor_parallel_size": plan.tp, "pipeline_parallel_size": plan.pp, "dtype": "bfloat16"},
    }
    if plan.dtype == "fp8":
        d["QuantConfig"] = {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}
        d["CalibConfig"] = {"calib_dataset": str(calib), "calib_batches": CALIB_SIZE, "calib_batch_size": 1,
                            "calib_max_seq_length": calib_max_seq_length(plan)}
    return d
