#!/usr/bin/env bash
# Copy the TensorRT-LLM interface facts from the team's shared reference into contracts/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="${1:-$ROOT/../shared/reference/trtllm-1.2.json}"
cp "$SRC" "$ROOT/contracts/trtllm-1.2.json"
echo "contracts/trtllm-1.2.json refreshed from $SRC"
# the tensorrt_llm template and backend rules the package renders and enforces (ziya_trt/wire/trtllm_template.py)
"${PYTHON:-python3}" -m ziya_trt.wire.trtllm_template "$ROOT/contracts"
