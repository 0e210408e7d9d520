#!/usr/bin/env bash
# The text core and the reference engine on transformers 4.57, the line TensorRT-LLM 1.2.1 pins (4.57.1 in
# the GPU image nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3), in a second environment, .venv-tf457/.
# No tritonserver tests. Extra arguments go to pytest.
VENV=.venv-tf457
EXTRAS=test
source "$(dirname "$0")/_venv.sh"
python -m pip install --quiet "transformers>=4.57,<4.58"
python -c 'import transformers as t; v = t.__version__; print("transformers", v); assert v.startswith("4.57."), v'
set +e
python -m pytest tests/ziya_trt/text tests/ziya_trt/engine -m "not server and not gpu" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here, not a pass" >&2
  exit 1
fi
exit "$rc"
