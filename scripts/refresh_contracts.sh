#!/usr/bin/env bash
# Copy the TensorRT-LLM interface facts from the team's shared reference into contracts/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="${1:-$ROOT/../shared/reference/trtllm-1.2.json}"
cp "$SRC" "$ROOT/contracts/trtllm-1.2.json"
echo "contracts/trtllm-1.2.json refreshed from $SRC"
