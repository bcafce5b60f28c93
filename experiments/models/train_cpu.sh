#!/usr/bin/env bash
# Train the four required SPEED configs with the CPU recipe on a 2-core machine, in two lanes of
# one thread each (about 2.5 hours: see README.md), then record 200 test traces per config.
#
#   experiments/models/train_cpu.sh [RUN_DIR]     # default: checkpoints/ (git-ignored)
#
# Re-running resumes every run from its checkpoints. Traces and metrics go where the report
# reads them: experiments/traces/NAME.jsonl.gz and experiments/models/results/NAME.{train,trace}.json.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
RUNS=${1:-checkpoints}
SPEEDSIM=${SPEEDSIM:-speedsim}
PY=${PYTHON:-python}
mkdir -p "$RUNS" experiments/traces experiments/models/results

"$SPEEDSIM" data build                       # corpus + tokenizer, cached (minutes, once)
"$PY" - <<'EOF'                              # token ids, cached once for both lanes
from speedsim.data import default_cache_dir, token_stream
from speedsim.train import corpus_of, load_train_config, prepare_data
cfg = load_train_config("experiments/models/4x3.yaml")  # every required config shares data settings
tok, _ = prepare_data(cfg)
for split in ("validation", "train"):
    token_stream(corpus_of(cfg), split, tok, default_cache_dir())
EOF

lane() {
  for n in "$@"; do
    "$SPEEDSIM" train --config "experiments/models/$n.yaml" --out "$RUNS/$n"
    "$SPEEDSIM" trace --checkpoint "$RUNS/$n" --split test --limit 200 --max-new-tokens 128 \
      --out "experiments/traces/$n.jsonl.gz" --json > "experiments/models/results/$n.trace.json"
    cp "$RUNS/$n/metrics.json" "experiments/models/results/$n.train.json"
  done
}
# Two lanes balanced by measured time (README.md): 4x3 + 12x1 (~150 min), 2x6 + 4x1 (~120 min).
lane 4x3 12x1 &
A=$!
lane 2x6 4x1 &
B=$!
wait "$A"
wait "$B"
