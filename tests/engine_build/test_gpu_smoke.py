"""The GPU smoke test (engine_build/smoke.sh, engine_build/smoke.py): run whole only on a GPU machine with
TensorRT-LLM 1.2.1; here, that it stops clearly without them, and that its checks pass against the CPU
reference engine behind the same fronts."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine_build.build import trtllm_version

ROOT = Path(__file__).resolve().parents[2]
SMOKE_SH = ROOT / "engine_build" / "smoke.sh"
NO_TRTLLM = pytest.mark.skipif(trtllm_version() is not None, reason="TensorRT-LLM is installed here")


@pytest.mark.gpu
@pytest.mark.skipif(trtllm_version() is None, reason="TensorRT-LLM 1.2.1 is not installed here: the GPU smoke "
                    "test runs only on a GPU machine")
@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="no NVIDIA GPU on this machine")
def test_gpu_smoke(tmp_path):
    from engine_build.smoke import main

    assert main(["--out", str(tmp_path)]) == 0


def test_smoke_sh_is_valid_bash():
    out = subprocess.run(["bash", "-n", str(SMOKE_SH)], capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr


@NO_TRTLLM
def test_smoke_sh_says_what_it_needs_and_stops_before_installing_anything():
    env = {**os.environ, "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(SMOKE_SH)], capture_output=True, text=True, timeout=60, check=False, env=env)
    assert out.returncode == 2
    assert "needs an NVIDIA GPU and TensorRT-LLM 1.2.1" in out.stdout.splitlines()[0]
    assert "TensorRT-LLM is not installed" in out.stderr and "pip" not in out.stdout + out.stderr


@NO_TRTLLM
def test_the_python_part_stops_clearly_without_tensorrt_llm(tmp_path, capsys):
    from engine_build.smoke import main

    assert main(["--out", str(tmp_path / "smoke")]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("GPU smoke test: needs an NVIDIA GPU and TensorRT-LLM 1.2.1 (nvcr.io/nvidia/tritonserver:")
    assert err.startswith("cannot run here: TensorRT-LLM is not installed here")
    assert not (tmp_path / "smoke").exists()  # nothing built


@pytest.mark.server
def test_the_checks_pass_against_the_reference_engine(ref_server):
    """The same checks, the same fronts (gRPC text mode, HTTP generate, /v1 streaming, a closed stream), with the
    CPU reference engine in TensorRT-LLM's place."""
    from engine_build.smoke import engine_active, run_checks, sample, scrape, wait_for

    said = []
    run_checks(ref_server, n_long=400, n=12, say=said.append)
    assert [s.split()[1] for s in said] == ["gRPC", "HTTP", "/v1/chat/completions", "cancel:"]
    assert "engine slots free" in said[-1], said
    # read from the backend's family, as on a GPU (the reference engine exports it; its last chat leaves within a
    # stats period), max = max_batch_size
    assert wait_for(lambda: engine_active(ref_server), lambda v: v == 0, timeout_s=5) == 0
    assert sample(scrape(ref_server.metrics_url), "nv_trt_llm_request_metrics", request_type="max") == 4


def test_a_wrong_answer_is_a_failure_that_says_what_differed():
    from engine_build.smoke import SmokeFailure, check_answer, expect, sample

    with pytest.raises(SmokeFailure, match="empty answer"):
        check_answer("HTTP generate", " ", 4)
    with pytest.raises(SmokeFailure, match="x != y"):
        expect("x" == "y", "x != y")
    text = ('nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="active",version="1"} 2\n'
            'nv_trt_llm_request_metrics{model="tensorrt_llm",request_type="max",version="1"} 64\n')
    assert sample(text, "nv_trt_llm_request_metrics", request_type="active") == 2.0
    assert sample(text, "ziya_engine_active_requests") is None


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="an NVIDIA GPU is visible here")
def test_the_serve_command_parses_and_its_failure_names_the_logs(tiny_ckpt, tmp_path):
    """``ziya-trt serve --engine tensorrt_llm`` as the smoke test starts it, on a dry-run engine: it gets past its
    arguments and the manifest to the GPU count, and the smoke test reports the exit with the logs to read."""
    from argparse import Namespace

    from engine_build.build import run_build
    from engine_build.plan import make_plan
    from engine_build.smoke import serving
    from ziya_trt.serving.process.server import ServerStartError

    engine = tmp_path / "engine-bf16"
    run_build(make_plan(tiny_ckpt, "h200", "bf16"), engine, tmp_path / "work", {}, dry_run=True,
              progress=lambda s: None, source_candidates=())
    binary = tmp_path / "tritonserver"
    binary.write_text("")
    with pytest.raises(ServerStartError, match="ziya-trt serve exited with code 1; see .*serve.log"):
        with serving(Namespace(out=tmp_path, tritonserver=str(binary)), engine, "bf16", ready_timeout_s=120):
            pass
    assert "no GPU is visible" in (tmp_path / "serve-bf16" / "serve.log").read_text()
