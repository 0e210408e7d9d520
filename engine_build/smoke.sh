#!/usr/bin/env bash
# GPU smoke test, in one step (not run here: the development machines have no GPU and no TensorRT-LLM).
# It needs an NVIDIA GPU and TensorRT-LLM 1.2.1: run it inside nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3
# (TensorRT-LLM's example scripts in /app/examples), from a checkout:
#   bash engine_build/smoke.sh [--dtypes bf16,fp8] [--tp 2] [--out runs/smoke]
# It installs the checkout into the image's Python (the image's torch, numpy, TensorRT(-LLM) and transformers held, as
# deploy/docker/Dockerfile does), then runs `python3 -m engine_build.smoke` (what it checks: engine_build/smoke.py).
# PYTHON=... picks another interpreter. Exit 0: passed; 1: a check failed; 2: this machine cannot run it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want=$(sed -n 's/^TRTLLM_VERSION = "\(.*\)"$/\1/p' engine_build/target.py)
echo "GPU smoke test: needs an NVIDIA GPU and TensorRT-LLM ${want} (nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3)"

# read from the package's metadata: importing tensorrt_llm would initialise CUDA
if ! have=$("$PY" -c 'import importlib.metadata as m; print(m.version("tensorrt_llm"))' 2>/dev/null); then
    echo "cannot run here: TensorRT-LLM is not installed for ${PY}; run this in the container above, on a GPU machine" >&2
    exit 2
fi
if [ "${have}" != "${want}" ]; then
    echo "cannot run here: TensorRT-LLM ${have} is installed, the smoke test needs ${want}" >&2
    exit 2
fi
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "cannot run here: no NVIDIA GPU is visible (nvidia-smi -L)" >&2
    exit 2
fi

if ! "$PY" -c 'import importlib.metadata as m; m.version("ziya-trt"); import openai' 2>/dev/null; then
    held=$(mktemp)
    "$PY" -m pip list --format=freeze \
        | { grep -iE '^(torch|numpy|tensorrt|tensorrt[-_]llm|tensorrt[-_]cu[0-9]+|transformers)==' || true; } > "${held}"
    PIP_BREAK_SYSTEM_PACKAGES=1 "$PY" -m pip install --quiet --constraint "${held}" --editable . "openai>=1.40"
    rm -f "${held}"
fi
exec "$PY" -m engine_build.smoke "$@"
