#!/usr/bin/env bash
# Everything speedsim wants from a lent GPU, in one call (about 9 minutes at most on an H100/H200):
#   1. models/   the GPU training recipe: 12x1, 4x3, 4x1, 2x6 pre-trained and fine-tuned, 200 test
#                traces each (experiments/models/gpu/train_all.sh)            -> 2 files
#   2. measured/ closed-loop whole decodes, batched decode steps and step rows at t5base dimensions
#                (experiments/measured/gpu/run.sh)                             -> 6 files
# At most 8 files come back from the device machine: these are exactly 8.
#
#   OUT=/dir bash experiments/gpu_session.sh     # on the GPU machine, repo root; carry .whl and .cache/corpus
#   SMOKE=1 PYTHON=.venv/bin/python OUT=/tmp/gs bash experiments/gpu_session.sh   # the CPU twin, ~4 min here
set -uo pipefail
OUT=${OUT:?set OUT to the output directory}
cd "$(dirname "$0")/.." || exit 2
PY=${PYTHON:-python3}
if ! $PY -c "import pydantic, simpy, rouge_score" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "installing .whl/*.whl failed: was .whl/ carried along?" >&2
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PARTS=${PARTS:-models measured}   # one call may run one part: PARTS=models, then PARTS=measured
if [[ " $PARTS " == *" models "* ]]; then
  mkdir -p "$OUT/models"
  echo "== models (timeout ${T_MODELS:=380}s)"
  PYTHON=$PY timeout --kill-after=10 "$T_MODELS" bash experiments/models/gpu/train_all.sh "$OUT/models"
  echo "   models: rc=$?"
fi
if [[ " $PARTS " == *" measured "* ]]; then
  mkdir -p "$OUT/measured"
  echo "== measured"
  PYTHON=$PY T_LOOP=${T_LOOP:-120} T_BATCH=${T_BATCH:-60} T_STEPS=${T_STEPS:-40} \
    bash experiments/measured/gpu/run.sh "$OUT/measured"
  echo "   measured: rc=$?"
fi
ls -la "$OUT"/*
