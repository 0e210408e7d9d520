#!/usr/bin/env bash
# GPU smoke test (not run here): inside nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3 (TensorRT-LLM 1.2.1),
# from a checkout:
#   bash engine_build/smoke.sh [--gpu h100-80gb]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet -e ".[test]"
exec python3 -m engine_build.smoke "$@"
