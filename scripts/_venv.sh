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
export PATH="$ROOT/$VENV/bin:$PATH"
