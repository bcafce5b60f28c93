#!/usr/bin/env bash
# Train the four required SPEED configs with the CPU recipe on a 2-core machine, in two lanes of
# one thread each (about 2.5 hours: see README.md), then record 200 test traces per config.
#
#   experiments/models/train_cpu.sh [RUN_DIR]     # default: checkpoints/ (git-ignored)
#
# Re-running resumes every run from its checkpoints. Traces and metrics go beside the shipped
# (GPU recipe) ones: experiments/traces/cpu/NAME.jsonl.gz and
# experiments/models/results-cpu/NAME.{train,trace}.json.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RUNS=${1:-checkpoints}
SPEEDSIM=${SPEEDSIM:-speedsim}
PY=${PYTHON:-python}
CONFIGS_DIR=${CONFIGS_DIR:-experiments/models}     # overrides: a trial run with other configs and outputs
TRACES=${TRACES:-experiments/traces/cpu}
RESULTS=${RESULTS:-experiments/models/results-cpu}
mkdir -p "$RUNS" "$TRACES" "$RESULTS"

"$SPEEDSIM" data build                       # corpus + tokenizer, cached (minutes, once)
"$PY" - "$CONFIGS_DIR/4x3.yaml" <<'EOF'       # token ids, cached once for both lanes
import sys
from speedsim.data import default_cache_dir, token_stream
from speedsim.train import corpus_of, load_train_config, prepare_data
cfg = load_train_config(sys.argv[1])  # every required config shares these data settings
tok, _ = prepare_data(cfg)
for split in ("validation", "train"):
    token_stream(corpus_of(cfg), split, tok, default_cache_dir())
EOF

lane() {
  for n in "$@"; do
    "$SPEEDSIM" train --config "$CONFIGS_DIR/$n.yaml" --out "$RUNS/$n"
    "$SPEEDSIM" trace --checkpoint "$RUNS/$n" --split test --limit "${LIMIT:-200}" --max-new-tokens 128 \
      --out "$TRACES/$n.jsonl.gz" --json > "$RESULTS/$n.trace.json"
    cp "$RUNS/$n/metrics.json" "$RESULTS/$n.train.json"
  done
}
# Two lanes balanced by measured time (README.md): 4x3 + 12x1 (~150 min), 2x6 + 4x1 (~120 min).
lane 4x3 12x1 &
A=$!
lane 2x6 4x1 &
B=$!
wait "$A"
wait "$B"
