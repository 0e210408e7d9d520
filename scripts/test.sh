#!/usr/bin/env bash
# Install (into .venv) and run the whole test suite. Extra arguments go to pytest.
source "$(dirname "$0")/_venv.sh"
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here, not a pass" >&2
  exit 1
fi
# the whole suite passed: the text core and the reference engine again on transformers 4.57 (the GPU image's)
if [ "$rc" -eq 0 ] && [ "$#" -eq 0 ]; then
  bash scripts/test_transformers457.sh
fi
exit "$rc"
