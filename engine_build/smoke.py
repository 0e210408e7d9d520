"""GPU smoke test, for a machine with TensorRT-LLM 1.2.1 (nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3;
``engine_build.target`` names the containers that carry it): build a tiny random LLaMA engine in bf16 and
fp8 from the test fixture, serve each with tritonserver, and run one perf sweep against it. Not run on
CPU-only machines (not run here).

    python -m engine_build.smoke --gpu h100-80gb --out runs/smoke
    python -m engine_build.smoke --tp 2 --pp 2      # the multi-GPU launch (mpirun, one rank per GPU): 4 GPUs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from perf import workload
from perf.bench import BenchConfig, run_bench
from perf.load import LoadConfig
from ziya_trt.fixtures import tiny
from ziya_trt.serving.config import ServeConfig
from ziya_trt.serving.launcher import external_triton
from ziya_trt.serving.multi_gpu import triton_server
from ziya_trt.serving.repo import render_repo
from ziya_trt.text.tokenizer import load_tokenizer

from .build import run_build, trtllm_version
from .plan import Workload, make_plan
from .target import TRTLLM_VERSION, container_for


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", default="h100-80gb")
    ap.add_argument("--out", type=Path, default=Path("runs/smoke"))
    ap.add_argument("--tritonserver", default="/opt/tritonserver/bin/tritonserver")
    ap.add_argument("--trtllm-source", help="TensorRT-LLM source tree with examples/ (default: search)")
    ap.add_argument("--dtypes", default="bf16,fp8")
    ap.add_argument("--tp", type=int, default=1, help="tensor parallelism (the fixture has 4 heads)")
    ap.add_argument("--pp", type=int, default=1, help="pipeline parallelism (the fixture has 2 layers)")
    a = ap.parse_args(argv)
    installed = trtllm_version()
    if installed != TRTLLM_VERSION:
        found = "is not installed here" if installed is None else f"{installed} is installed here"
        print(f"TensorRT-LLM {found}: the GPU smoke test needs a GPU machine with TensorRT-LLM {TRTLLM_VERSION} "
              f"({container_for(TRTLLM_VERSION)})")
        return 2
    ckpt = tiny.build_checkpoint(a.out / "fixture")
    tok = load_tokenizer(ckpt)
    summary = {}
    for dtype in a.dtypes.split(","):
        plan = make_plan(ckpt, a.gpu, dtype, a.tp, a.pp, workload=Workload(isl=128, osl=64, min_batch=1))
        engine = a.out / f"engine-{dtype}"
        run_build(plan, engine, a.out / f"work-{dtype}", {"model": "tiny fixture"}, trtllm_source=a.trtllm_source)
        cfg = ServeConfig(engine="tensorrt_llm", tokenizer_dir=ckpt, engine_dir=engine.resolve(),
                          max_batch_size=plan.max_batch_size, max_input_len=plan.max_input_len,
                          max_seq_len=plan.max_seq_len, world_size=plan.world_size)
        repo = render_repo(cfg, a.out / f"repo-{dtype}")
        with triton_server(repo, install=external_triton(a.tritonserver), log_file=a.out / f"triton-{dtype}.log",
                           serve_config=cfg) as srv:
            items = workload.synthetic(tok, 16, 120, 32)
            points = [LoadConfig(concurrency=c, num_requests=32, warmup=2) for c in (1, 8)]
            res = run_bench(BenchConfig(url=f"grpc://{srv.grpc_url}", points=points), items, tok,
                            a.out / f"bench-{dtype}", {"smoke": dtype})
        summary[dtype] = {p["label"]: p["summary"]["output_token_throughput"] for p in res["points"]}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
