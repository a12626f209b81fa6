#!/usr/bin/env bash
# The GPU check of issue 9, one prepared script, <= 8 minutes on one H200 (see bench/gpu/check.py for what
# it measures). Prepare on a machine with a package index first:  bash bench/gpu/prepare.sh
# then on the GPU machine (no index; torch, transformers, accelerate, peft already there):
#   bash bench/gpu/check.sh            -> one JSON line on stdout (also in $OUT/check.json when OUT is set)
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=bench/gpu
FIXTURE=${FIXTURE:-$HERE/fixture}
WORK=${WORK:-/tmp/posttrain-gpu-check}
PY=${PYTHON:-python}
[ -d "$FIXTURE/tokenizer" ] || { echo "error: no fixture at $FIXTURE (run bench/gpu/prepare.sh first)" >&2; exit 2; }
# what the GPU machine lacks, from the wheels prepare.sh downloaded (no index there)
if ! $PY -c "import omegaconf" 2>/dev/null; then
  $PY -m pip install -q --no-index --find-links "$HERE/wheels" omegaconf
fi
TRL=""
if $PY -m pip install -q --no-index --find-links "$HERE/wheels" trl 2>/dev/null && $PY -c "import trl" 2>/dev/null; then
  TRL="--trl"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
rm -rf "$WORK"
timeout 470 $PY -m torch.distributed.run --nproc_per_node 1 --master_addr 127.0.0.1 --master_port 29531 \
  $HERE/check.py --fixture "$FIXTURE" --work "$WORK" --steps 30 $TRL | tee "${OUT:-/tmp}/check.json"
