"""``ziya-trt fetch | validate | plan | build``: the engine-building subcommands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from ziya_trt.errors import ZiyaError

from .fetch import DEFAULT_MODEL, FetchError

if TYPE_CHECKING:
    from .plan import BuildPlan


class BuildPlanError(ZiyaError):
    """A plan.json that `ziya-trt build` cannot build from as it stands; the message says what to run."""


def _plan_options(p) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="ModelScope id or local checkpoint directory")
    p.add_argument("--revision", help="ModelScope revision (branch, tag or commit)")
    p.add_argument("--gpu", help="a GPU from `ziya-trt plan --list-gpus` (default h100-80gb), or any name "
                                 "with --gpu-mem-gib")
    p.add_argument("--gpu-mem-gib", type=float, help="the GPU's total memory in GiB (nvidia-smi's MiB / 1024), "
                                                     "for a GPU the table lacks or to override its memory")
    p.add_argument("--gpu-fp8", action=argparse.BooleanOptionalAction, default=None,
                   help="whether a --gpu-mem-gib GPU has FP8 tensor cores (default: assumed not)")
    p.add_argument("--dtype", choices=["bf16", "fp8"], default="bf16")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--isl", type=int, default=2048, help="input tokens per request")
    p.add_argument("--osl", type=int, default=512, help="output tokens per request")
    p.add_argument("--min-batch", type=int, default=8, help="fewest concurrent full-length requests to hold")


def add_parsers(sub) -> None:
    p = sub.add_parser("fetch", help="download a checkpoint from ModelScope (resumable) and validate it")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--revision")
    p.add_argument("--cache-dir")
    p.add_argument("--offline", action="store_true", help="use only the local ModelScope cache")
    p.set_defaults(func=run_fetch)

    p = sub.add_parser("validate", help="check a checkpoint's config, shards, shapes, dtype and tokenizer")
    p.add_argument("model_dir", type=Path)
    p.set_defaults(func=run_validate)

    p = sub.add_parser("plan", help="plan engine limits for a GPU from the model's shape and a workload "
                                    "(no download: a local checkpoint, the ModelScope cache or the built-in shape)")
    _plan_options(p)
    p.add_argument("--cache-dir", help="ModelScope cache to look in (default: modelscope's own)")
    p.add_argument("--list-gpus", action="store_true", help="print the GPU table and exit")
    p.add_argument("--out", type=Path, default=Path("plan.json"))
    p.set_defaults(func=run_plan)

    p = sub.add_parser("build", help="build a bf16 or fp8 TensorRT-LLM 1.2.1 engine from a plan")
    _plan_options(p)
    p.add_argument("--plan", type=Path, help="a plan.json from `ziya-trt plan` (overrides the plan flags); a plan "
                                             "made from the built-in shape fetches its model first")
    p.add_argument("--cache-dir", help="ModelScope cache to fetch into (default: modelscope's own)")
    p.add_argument("--engine-dir", type=Path, default=Path("engines/ziya2-13b"))
    p.add_argument("--work-dir", type=Path, help="converted checkpoint and logs (default: ENGINE_DIR.work)")
    p.add_argument("--calib-dataset", type=Path, help="calibration directory with a 'text' column (fp8)")
    p.add_argument("--trtllm-source", help="the directory that holds TensorRT-LLM's examples/ (default: "
                                           "$TRTLLM_SOURCE, else the first of /app (the 26.07 Triton container), "
                                           "/app/tensorrt_llm, /opt/tensorrt_llm, /workspace/TensorRT-LLM with them)")
    p.add_argument("--dry-run", action="store_true", help="write the plan, commands and manifest only")
    p.add_argument("--skip-validate", action="store_true")
    p.set_defaults(func=run_build)


def _source(args, model: str | None = None) -> tuple[Path, dict]:
    """The checkpoint directory (absolute) for ``model`` (default --model), fetched where it is not local.
    A dry run never downloads: it looks only in the local ModelScope cache."""
    from .fetch import fetch_checkpoint

    model = model or args.model
    revision = getattr(args, "revision", None)
    d = fetch_checkpoint(model, revision, getattr(args, "cache_dir", None),
                         offline=getattr(args, "dry_run", False)).resolve()
    return d, {"model": model, "revision": revision, "local_dir": str(d)}


def _plan_checkpoint(args, plan: BuildPlan) -> tuple[BuildPlan, Path, dict]:
    """A loaded plan with its checkpoint: its model_dir, or, for a plan made from a built-in shape, its
    model_id fetched (the same path as `ziya-trt fetch`) and checked to have the shape that was planned."""
    from dataclasses import replace

    from .spec import ModelSpec

    if plan.model_dir:
        return plan, Path(plan.model_dir), {"model": plan.model_id or plan.model_dir, "revision": None}
    if not plan.model_id:
        raise BuildPlanError(f"{args.plan} names no checkpoint (no model_dir, no model_id): make it again with "
                             "`ziya-trt plan --model DIR_OR_MODELSCOPE_ID`")
    try:
        model_dir, source = _source(args, plan.model_id)
    except FetchError as e:
        how = "a dry run looks only in the local ModelScope cache" if args.dry_run else "fetching it failed"
        raise BuildPlanError(f"{args.plan} was planned from the built-in shape of {plan.model_id}, without a "
                             f"checkpoint, and {how}: {e} Fetch it first with `ziya-trt fetch --model "
                             f"{plan.model_id}{_cache_flag(args)}`, then run this build again") from e
    got = {k: v for k, v in ModelSpec.from_dir(model_dir).to_dict().items() if k != "dtype"}
    planned = {k: v for k, v in plan.model.items() if k != "dtype"}
    if got != planned:
        differ = ", ".join(f"{k} {planned.get(k)} planned, {got.get(k)} in the checkpoint"
                           for k in sorted(set(got) | set(planned)) if got.get(k) != planned.get(k))
        raise BuildPlanError(f"{model_dir} does not have the shape {args.plan} was planned for ({differ}): plan "
                             f"again from it with `ziya-trt plan --model {model_dir}`")
    return replace(plan, model_dir=str(model_dir)), model_dir, source


def _cache_flag(args) -> str:
    return f" --cache-dir {args.cache_dir}" if getattr(args, "cache_dir", None) else ""


def run_fetch(args) -> int:
    from .fetch import fetch_checkpoint
    from .validate import validate_checkpoint

    d = fetch_checkpoint(args.model, args.revision, args.cache_dir, offline=args.offline)
    print(d)
    validate_checkpoint(d)
    print("checkpoint is valid")
    return 0


def run_validate(args) -> int:
    from .validate import validate_checkpoint

    rep = validate_checkpoint(args.model_dir)
    s = rep.spec
    print(f"ok: {s.architecture}, {s.params / 1e9:.2f} B parameters, {rep.tensors} tensors in "
          f"{len(rep.weight_files)} file(s), {sorted(rep.dtypes)}, tokenizer {rep.tokenizer_vocab} tokens "
          f"(model vocab {s.vocab_size})")
    return 0


def _make_plan(args, model_dir: Path | None, shape=None):
    """The plan for the flags; ``shape`` (a spec.ShapeSource) when the shape is known without reading model_dir."""
    from .gpus import resolve_gpu
    from .plan import Workload, make_plan

    gpu = resolve_gpu(args.gpu, args.gpu_mem_gib, args.gpu_fp8)
    workload = Workload(args.isl, args.osl, args.min_batch)
    if shape is None:
        return make_plan(model_dir, gpu, args.dtype, args.tp, args.pp, workload)
    model_id = "" if Path(args.model).expanduser().is_dir() else args.model
    return make_plan(shape.model_dir, gpu, args.dtype, args.tp, args.pp, workload, spec=shape.spec,
                     notes=(shape.note,), model_id=model_id)


def print_plan(plan, con: Console | None = None) -> None:
    con = con or Console()
    gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    t = Table("", "value", title=f"build plan: {plan.gpu}, {plan.dtype}, tp{plan.tp} pp{plan.pp}")
    rows = [
        ("checkpoint", plan.model_dir or "none (built-in shape)"),
        ("GPU memory", f"{plan.gpu_memory_mib:,} MiB = {plan.gpu_memory_mib / 1024:.1f} GiB"),
        ("parameters", f"{plan.model['params'] / 1e9:.2f} B"),
        ("weights per GPU", gb(plan.weight_bytes_per_gpu)),
        ("KV bytes per token per GPU", f"{plan.kv_bytes_per_token_per_gpu:,}"),
        ("activations per GPU", gb(plan.activation_bytes_per_gpu)),
        ("runtime reserve", gb(plan.runtime_reserve_bytes)),
        ("KV cache per GPU", f"{gb(plan.kv_cache_bytes_per_gpu)} = {plan.kv_cache_tokens:,} tokens"),
        ("max_batch_size", str(plan.max_batch_size)),
        ("max_num_tokens", str(plan.max_num_tokens)),
        ("max_input_len / max_seq_len", f"{plan.max_input_len} / {plan.max_seq_len}"),
        ("vocab", f"{plan.vocab_size} (padded {plan.padded_vocab_size}; padding needed: {plan.vocab_padding_needed})"),
        ("norm_quant_fusion / reduce_fusion", f"{plan.norm_quant_fusion} / {plan.reduce_fusion}"),
        ("fits", "yes" if plan.fits else "[red]NO[/]"),
    ]
    for r in rows:
        t.add_row(*r)
    con.print(t)
    for n in plan.notes:
        con.print(f"[cyan]note:[/] {n}")
    for p in plan.problems:
        con.print(f"[red]problem:[/] {p}")
    for s in plan.suggestions:
        con.print(f"[yellow]suggestion:[/] {s}")


def gpu_table() -> list[str]:
    """The GPU table as plain lines (no wrapping at any width)."""
    from .gpus import GPUS, aliases_of

    head = (f"{'name':<15} {'aliases':<30} {'memory MiB':>10} {'GiB':>6} {'FP8':<4} {'TB/s':>5} {'arch':<10} "
            "nvidia-smi name")
    lines = [head, "-" * len(head)]
    for g in sorted(GPUS.values(), key=lambda g: (g.memory_mib, g.name)):
        mark = "" if g.memory_from == "nvidia-smi" else "*"
        lines.append(f"{g.name:<15} {', '.join(aliases_of(g.name)):<30} {g.memory_mib:>9,}{mark:1} "
                     f"{g.memory_gib:>6.1f} {'yes' if g.fp8 else 'no':<4} {g.bandwidth_tb_s:>5g} {g.arch:<10} "
                     f"{g.smi_name}")
    lines += ["memory: nvidia-smi's total (* = spec sheet's GB converted); TB/s: spec sheet",
              "any other GPU: --gpu NAME --gpu-mem-gib N [--gpu-fp8] (no FP8 assumed without --gpu-fp8)"]
    return lines


def run_plan(args) -> int:
    if args.list_gpus:
        print("\n".join(gpu_table()))
        return 0
    from .spec import resolve_shape

    shape = resolve_shape(args.model, args.revision, args.cache_dir)
    plan = _make_plan(args, shape.model_dir, shape)
    print_plan(plan)
    out = plan.save(args.out).resolve()
    print(f"saved {out}")
    return 0 if plan.fits else 1


def run_build(args, source_candidates=None) -> int:
    """``source_candidates``: where to look for TensorRT-LLM's examples/ (default build.EXAMPLES_CANDIDATES)."""
    from .build import EXAMPLES_CANDIDATES
    from .build import run_build as build
    from .commands import CALIB_DEFAULT
    from .plan import BuildPlan
    from .validate import validate_checkpoint

    if args.plan:
        plan, model_dir, source = _plan_checkpoint(args, BuildPlan.load(args.plan))
    else:
        model_dir, source = _source(args)
        plan = _make_plan(args, model_dir)
    print_plan(plan)
    if not args.skip_validate:
        validate_checkpoint(model_dir)
    work = args.work_dir or args.engine_dir.with_name(args.engine_dir.name + ".work")
    manifest = build(plan, args.engine_dir, work, source, tokenizer_dir=str(model_dir),
                     trtllm_source=args.trtllm_source, calib=args.calib_dataset or CALIB_DEFAULT, dry_run=args.dry_run,
                     source_candidates=EXAMPLES_CANDIDATES if source_candidates is None else source_candidates)
    print(f"manifest: {manifest}")
    print(json.dumps({"commands": json.loads(manifest.read_text())["commands"]}, indent=2))
    return 0
