#!/usr/bin/env bash
# Install (into .venv) and run the demo. Extra arguments go to `ziya-trt demo`.
source "$(dirname "$0")/_venv.sh"
exec ziya-trt demo "$@"
