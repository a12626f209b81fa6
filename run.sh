#!/usr/bin/env bash
# One entry point for a fresh machine: sets up .venv (once), then runs what you ask.
#   bash run.sh demo [--out DIR]   the main job: the lab demo on the built-in default
#   bash run.sh test [pytest args] the test suite (what CI runs)
#   bash run.sh setup              only set up
set -euo pipefail
cd "$(dirname "$0")"
VENV="${POSTTRAIN_VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
  local pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
  if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
      $pip install torch                    # a GPU machine: PyPI's default (CUDA) build
    else
      $pip install "torch==2.13.0"          # no GPU: the CPU wheel (never pull CUDA builds here)
    fi
  fi
  $pip install -e ".[test,gguf]"
  # the compiled lean decode step, built once per machine (~20 s; without a C++ compiler it decodes in Python)
  "$VENV/bin/python" -m posttrain.rollout.native >/dev/null 2>&1 || true
}

cmd="${1:-demo}"; shift || true
case "$cmd" in
  setup) setup ;;
  test)  setup; exec "$VENV/bin/python" -m pytest -m "not slow" -q "$@" ;;
  demo)  setup; exec "$VENV/bin/posttrain" demo "$@" ;;
  *)     setup; exec "$VENV/bin/posttrain" "$cmd" "$@" ;;
esac
