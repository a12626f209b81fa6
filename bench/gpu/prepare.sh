#!/usr/bin/env bash
# Prepare bench/gpu/check.sh on a machine WITH a package index: the fixture's tokenizer and data (not its
# models) into bench/gpu/fixture, and wheels of what the GPU machine lacks into bench/gpu/wheels (both
# git-ignored; carry them to the GPU machine). TRL needs `datasets` (pyarrow, pandas ...): for Python
# $PYVER on manylinux x86_64; if those wheels are too large to carry, check.sh skips the TRL part.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=bench/gpu
SRC=${FIXTURE_SRC:-bench/.trl-harness/fixture}
PYVER=${PYVER:-311}
[ -d "$SRC/tokenizer" ] || { echo "error: no fixture at $SRC: run python bench/compare.py sft --steps 1 first" >&2; exit 2; }
mkdir -p "$HERE/fixture" "$HERE/wheels"
cp -r "$SRC/tokenizer" "$SRC/data" "$HERE/fixture/"
python -m pip download -q -d "$HERE/wheels" --only-binary=:all: --python-version "$PYVER" \
  --platform manylinux2014_x86_64 --no-deps omegaconf PyYAML
python -m pip wheel -q -w "$HERE/wheels" --no-deps antlr4-python3-runtime==4.9.3
if [ "${WITH_TRL:-1}" = 1 ]; then
  python -m pip download -q -d "$HERE/wheels" --only-binary=:all: --python-version "$PYVER" \
    --platform manylinux2014_x86_64 trl datasets || echo "note: TRL wheels not downloaded; check.sh will skip TRL"
fi
du -sh "$HERE/wheels" "$HERE/fixture"
