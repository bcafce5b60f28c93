#!/usr/bin/env bash
# Train the four required SPEED configs (12x1, 4x1, 4x3, 2x6) with the GPU recipe, record 200
# test traces per config, and pack traces + metrics into one archive.
#
#   experiments/models/gpu/train_all.sh OUT_DIR          # on the GPU machine, from the repo root
#   SMOKE=1 experiments/models/gpu/train_all.sh OUT_DIR  # here, on CPU: a few steps, 3 traces each
#
# Needs the corpus built here and carried along (the GPU machine's site-packages differ, so it
# must not build its own): `speedsim data build --export .cache/corpus` (about 35 MB, with the
# 8192-token tokenizer), carried as `.cache/corpus`. Python needs torch, tokenizers, numpy, tqdm,
# pyyaml, click, pydantic, rouge-score (+ nltk, absl-py); the project runs from PYTHONPATH.
#
# Time (GPU): each config trains under wall-clock caps written in its YAML (pretrain 20 s,
# finetune 10 s; the LR schedule anneals by time under a cap), about 40 s per config with start,
# evaluation and checkpoints; tracing runs on the CPU cores in the background while the next
# config trains. Budget: about 4 minutes in all (tokenising the corpus once ~15 s, 4 x ~40 s,
# the last trace ~30 s). Everything that comes back is in OUT_DIR: gpu-results.tar.gz
# (traces/NAME.jsonl.gz, results/NAME.train.json, results/NAME.trace.json, provenance.json)
# and train_all.log.
set -euo pipefail

OUT=$(mkdir -p "${1:?usage: train_all.sh OUT_DIR}" && cd "$1" && pwd)
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
CONFIGS=${CONFIGS:-"2x1 12x1 4x3 4x1 2x6"}  # a draft before its target; slowest to trace first otherwise
# DRAFT_OF="A=B ...": config A is traced with config B as its draft model (`speedsim trace --draft-checkpoint`),
# when B trained earlier in this call: traces/A.draft-B.jsonl.gz holds B's prediction of every position on A's path
DRAFT_OF=${DRAFT_OF:-"12x1=2x1"}
LIMIT=${LIMIT:-200}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SPEEDSIM_CORPUS="$ROOT/.cache/corpus"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/speedsim-gpu.XXXXXX")
mkdir -p "$WORK/configs" "$WORK/runs" "$WORK/pack/traces" "$WORK/pack/results"
LOG="$OUT/train_all.log"
exec > >(tee -a "$LOG") 2>&1
say() { echo "[train_all $(date -u +%H:%M:%S)] $*"; }

if [ "${SMOKE:-0}" = 1 ]; then
  DEVICE=cpu LIMIT=3
  # the token cache of this machine is reused (its names are content digests)
else
  DEVICE=cuda
  export SPEEDSIM_CACHE="$WORK/cache"
fi

"$PY" - "$DEVICE" <<'EOF' || { say "missing dependency or device"; exit 2; }
import sys
import click, numpy, pydantic, rouge_score, tokenizers, torch, tqdm, yaml  # noqa: F401
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("CUDA is not available")
print("torch", torch.__version__, "device", torch.cuda.get_device_name(0) if sys.argv[1] == "cuda" else "cpu")
EOF

# Configs: the committed GPU recipe; SMOKE shrinks steps, width and evaluation (same code path).
# CAP_SCALE=K multiplies each stage's wall-clock cap (a longer recipe on a GPU session with time to spare).
# SET="section.field=value ..." overrides config fields of every config (values in YAML syntax), e.g.
# SET="finetune.fixed_shape=false finetune.pad_multiple=32 data.min_tgt_tokens=16"; provenance.json records it.
for n in $CONFIGS; do
  "$PY" - "experiments/models/gpu/$n.yaml" "$WORK/configs/$n.yaml" "${SMOKE:-0}" "${CAP_SCALE:-1}" "${SET:-}" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
scale = float(sys.argv[4])
if not 0 < scale <= 100:
    sys.exit(f"CAP_SCALE={sys.argv[4]}: give a factor in (0, 100]")
for item in sys.argv[5].split():  # no spaces inside a value: [0,0,1], not [0, 0, 1]
    path, eq, value = item.partition("=")
    keys = path.split(".")
    node = cfg
    for key in keys[:-1]:
        node = node.setdefault(key, {}) if isinstance(node, dict) else None
    if not eq or not all(keys) or not isinstance(node, dict):
        sys.exit(f"SET: {item!r} is not section.field=value (an existing section, no spaces)")
    node[keys[-1]] = yaml.safe_load(value)
for stage in ("pretrain", "finetune"):
    if cfg[stage].get("max_seconds"):
        cfg[stage]["max_seconds"] = round(cfg[stage]["max_seconds"] * scale, 1)
if sys.argv[3] == "1":
    cfg["model"].update(d_model=32, n_heads=2, d_ff=64)
    for stage in ("pretrain", "finetune"):
        cfg[stage].update(steps=3, batch_size=4, warmup_steps=1, max_seconds=60)
    cfg["eval"].update(val_examples=8, rouge_examples=2, max_new_tokens=16)
    cfg["threads"] = 1
yaml.safe_dump(cfg, open(sys.argv[2], "w"), sort_keys=False)
EOF
done

say "corpus and tokens (once for all configs)"
"$PY" - "$WORK/configs/${CONFIGS%% *}.yaml" <<'EOF'
import sys
from speedsim.data import DEFAULT_VOCAB_SIZE, corpus_tokenizer, default_cache_dir, open_corpus, token_stream
from speedsim.train import load_train_config, prepare_data
c = open_corpus()
tok = corpus_tokenizer(c, DEFAULT_VOCAB_SIZE)
for split in ("validation", "train"):
    print(split, len(token_stream(c, split, tok, default_cache_dir(), progress=False)), "tokens")
_, enc = prepare_data(load_train_config(sys.argv[1]), tok)  # every config shares these lengths
print({k: len(v) for k, v in enc.items()}, "fine-tuning examples")
EOF

# STEPS_OF="A=B ...": config A trains for the steps config B took earlier in this call (pre-training
# and fine-tuning), so the two see the same data; without B in this call, A keeps its YAML's steps.
STEPS_OF=${STEPS_OF:-"4x1-steps=4x3"}
match_steps() {
  local pair of
  for pair in $STEPS_OF; do
    [ "${pair%%=*}" = "$1" ] || continue
    of="$WORK/pack/results/${pair#*=}.train.json"
    if [ ! -s "$of" ]; then say "$1: ${pair#*=} has not trained in this call; keeping the steps in $1.yaml"; return; fi
    "$PY" - "$WORK/configs/$1.yaml" "$of" <<'EOF'
import json, sys, yaml
cfg, stages = yaml.safe_load(open(sys.argv[1])), json.load(open(sys.argv[2]))["stages"]
for stage, steps in stages.items():
    cfg[stage]["steps"] = steps
    cfg[stage]["warmup_steps"] = min(cfg[stage].get("warmup_steps", 50), steps)
yaml.safe_dump(cfg, open(sys.argv[1], "w"), sort_keys=False)
print(f"steps of {sys.argv[2].rsplit('/', 1)[-1].split('.')[0]}: {stages}")
EOF
  done
}

TRACE_PIDS=()
for n in $CONFIGS; do
  match_steps "$n"
  say "train $n on $DEVICE"
  if ! "$PY" -m speedsim.cli train --config "$WORK/configs/$n.yaml" --out "$WORK/runs/$n" --device "$DEVICE" --json \
      > "$WORK/pack/results/$n.train.json"; then
    say "train $n FAILED (see above); going on with the next config"
    continue
  fi
  DRAFT_ARGS=()
  for pair in $DRAFT_OF; do
    d=${pair#*=}
    if [ "${pair%%=*}" = "$n" ] && [ -d "$WORK/runs/$d" ]; then
      DRAFT_ARGS=(--draft-checkpoint "$WORK/runs/$d" --draft-out "$WORK/pack/traces/$n.draft-$d.jsonl.gz")
      say "$n is traced with $d as its draft model"
    fi
  done
  say "trace $n ($LIMIT test examples, CPU, background)"
  ( OMP_NUM_THREADS=2 "$PY" -m speedsim.cli trace --checkpoint "$WORK/runs/$n" --split test --limit "$LIMIT" \
      --max-new-tokens 128 --out "$WORK/pack/traces/$n.jsonl.gz" "${DRAFT_ARGS[@]}" --json \
      > "$WORK/pack/results/$n.trace.json" && say "traced $n" ) &
  TRACE_PIDS+=($!)
done
for pid in "${TRACE_PIDS[@]}"; do wait "$pid" || say "a trace FAILED (see above)"; done

"$PY" - "$WORK/pack/provenance.json" "$DEVICE" "${SMOKE:-0}" "$CONFIGS" "${CAP_SCALE:-1}" "${SET:-}" <<'EOF'
import json, subprocess, sys, time, torch
try:  # the GPU machine's copy of the tree may have no git metadata
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
except OSError:
    commit = "unknown"
dev = torch.cuda.get_device_name(0) if sys.argv[2] == "cuda" else "cpu"
json.dump({"device": dev, "torch": torch.__version__, "smoke": sys.argv[3] == "1", "configs": sys.argv[4].split(),
           "corpus": json.load(open(".cache/corpus/manifest.json"))["files"]["documents.jsonl.xz"]["sha256"],
           "recipe": "experiments/models/gpu/*.yaml", "cap_scale": float(sys.argv[5]), "set": sys.argv[6].split(),
           "commit": commit,
           "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, open(sys.argv[1], "w"), indent=1)
EOF
tar -czf "$OUT/gpu-results.tar.gz" -C "$WORK/pack" .
say "wrote $OUT/gpu-results.tar.gz ($(du -h "$OUT/gpu-results.tar.gz" | cut -f1))"
rm -rf "$WORK"
