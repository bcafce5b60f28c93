#!/usr/bin/env bash
# One prepared measurement on a CUDA GPU (H100/H200: about 3-4 minutes; the timeouts bound it at ~6):
#   env      nvidia-smi and library versions                     -> env.json
#   loop     whole greedy and SPEED decodes at t5base dimensions  -> decode.csv (+ exit traces in measured.tgz)
#            (random weights, untied LM head, 12x1 / 4x3 / 2x6, CUDA-graph replay per step)
#   loop-tied  the same with the LM head tied to the embeddings   -> decode-tied.csv
#   batch    one decode step for B = 1..32 sequences at own KV lengths, unshared 12x1 and SPEED 4x3 / 2x6
#                                                                 -> batch.csv
#   steps    ceilings, one layer, the shared group, the LM head   -> steps.csv
# Everything, model specs, traces and per-part logs included, also goes into measured.tgz.
#
#   OUT=/some/dir bash experiments/measured/gpu/run.sh            # on the GPU machine (repo root; .whl/ beside)
#   SMOKE=1 PYTHON=.venv/bin/python bash experiments/measured/gpu/run.sh /tmp/gpu-smoke   # CPU twin, < 2 min
#   PARTS="env loop-tied" OUT=/some/dir bash experiments/measured/gpu/run.sh   # only some parts
#
# Each part has its own timeout, so one failing part does not lose the others; the CSVs are
# rewritten after every model or pattern, so a part cut short keeps what it measured.
set -uo pipefail

OUT=${1:-${OUT:-}}
if [ -z "$OUT" ]; then echo "usage: OUT=DIR bash $0  (or: bash $0 DIR)" >&2; exit 2; fi
cd "$(dirname "$0")/../../.." || exit 2  # the repository root
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
START=$(date +%s)

# Dependencies the GPU machine lacks (pydantic, simpy, ...): wheels in .whl/, installed beside, not into, Python.
if ! $PY -c "import pydantic, pydantic_core, simpy, rouge_score, nltk; assert pydantic.VERSION.startswith('2.')" \
        2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || echo "installing .whl/*.whl failed: was .whl/ carried along?" >&2
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD

RAW=$OUT/raw
mkdir -p "$RAW"
if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu
  printf 'name: tiny-t5\nd_model: 64\nn_heads: 4\nd_ff: 128\nffn: relu\ncross_attention_len: 32\nvocab: 512\nencoder_layers: 1\n' \
    > "$RAW/tiny-t5.yaml"
  MODEL=(--model tiny-t5 --model-spec "$RAW/tiny-t5.yaml")
  LOOP=(--sequences 2 --max-new-tokens 16)
  BATCH=(--batch-sizes 1,4,16 --batch-ctx 32)
  STEPS=(--quick)
  T_LOOP=60 T_TIED=60 T_BATCH=30 T_STEPS=30
else
  DEVICE=cuda
  MODEL=(--model t5base)
  LOOP=(--sequences 4 --max-new-tokens 128)
  BATCH=()
  STEPS=()
  # an H200 took 121 s for the untied part before eager decodes were cut to 2 sources, once (~60 s now)
  T_LOOP=${T_LOOP:-120} T_TIED=${T_TIED:-90} T_BATCH=${T_BATCH:-60} T_STEPS=${T_STEPS:-45}
fi

declare -A STATUS
PARTS=" ${PARTS:-env loop loop-tied batch steps} "  # e.g. PARTS="env loop-tied" to rerun only those
part() {  # part NAME SECONDS COMMAND...: run with a timeout, log to raw/NAME.log, remember the exit status
  local name=$1 limit=$2; shift 2
  [[ "$PARTS" == *" $name "* ]] || return 0
  local t0=$(date +%s)
  echo "== $name (timeout ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$RAW/$name.out" 2> "$RAW/$name.log"
  local rc=$?
  STATUS[$name]="rc=$rc $(( $(date +%s) - t0 ))s"
  echo "   ${STATUS[$name]}"; tail -n 5 "$RAW/$name.log" | sed 's/^/   | /'
}

part env 30 $PY - "$OUT/env.json" "$DEVICE" <<'EOF'
import json, platform, subprocess, sys, time
out, device = sys.argv[1], sys.argv[2]
env = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "python": platform.python_version(),
       "host": platform.node(), "processor": platform.processor() or platform.machine()}
try:
    import torch
    env.update(torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
               cuda_available=torch.cuda.is_available())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, sms=p.multi_processor_count, memory_GiB=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}", l2_MiB=getattr(p, "L2_cache_size", 0) / 2**20)
except Exception as err:  # keep going: the env file is a record, not a gate
    env["torch_error"] = repr(err)
for key, cmd in {"nvidia_smi": ["nvidia-smi"],
                 "nvidia_smi_query": ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                                      "clocks.max.mem,power.limit,pstate,mig.mode.current", "--format=csv"]}.items():
    try:
        env[key] = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except Exception as err:
        env[key] = repr(err)
json.dump(env, open(out, "w"), indent=1)
print(env.get("gpu", env.get("processor")), env.get("torch"))
EOF

part loop "$T_LOOP" $PY -m speedsim.cli measure --device $DEVICE --parts loop --sharings 12x1,4x3,2x6 \
  --lm-head untied "${MODEL[@]}" "${LOOP[@]}" --out "$RAW/decode.csv" --json
part loop-tied "$T_TIED" $PY -m speedsim.cli measure --device $DEVICE --parts loop --sharings 12x1,4x3,2x6 \
  --lm-head tied "${MODEL[@]}" "${LOOP[@]}" --out "$RAW/decode-tied.csv" --json
part batch "$T_BATCH" $PY -m speedsim.cli measure --device $DEVICE --parts batch --sharings 12x1,4x3,2x6 \
  "${MODEL[@]}" "${BATCH[@]}" --out "$RAW/batch.csv" --json
part steps "$T_STEPS" $PY -m speedsim.cli measure --device $DEVICE --parts steps --sharings 4x3 \
  "${MODEL[@]}" "${STEPS[@]}" --out "$RAW/steps.csv" --json

# the CSVs on top, everything (traces, specs, env, logs) in one archive: at most 8 files come back
[ -f "$RAW/decode.csv" ] && cp "$RAW/decode.csv" "$OUT/decode.csv"
[ -f "$RAW/decode-tied.csv" ] && cp "$RAW/decode-tied.csv" "$OUT/decode-tied.csv"
[ -f "$RAW/batch.csv" ] && cp "$RAW/batch.csv" "$OUT/batch.csv"
[ -f "$RAW/steps.csv" ] && cp "$RAW/steps.csv" "$OUT/steps.csv"
{
  echo "run.sh on $(hostname) $(date -u '+%Y-%m-%d %H:%M:%S UTC'), SMOKE=$SMOKE, $(( $(date +%s) - START )) s"
  for name in env loop loop-tied batch steps; do echo "  $name: ${STATUS[$name]:-not run}"; done
  $PY experiments/measured/gpu/summary.py "$OUT" 2>&1
  grep -h "WARNING\|Error\|error" "$RAW"/*.log 2>/dev/null | head -n 20 | sed 's/^/  log: /'
} > "$OUT/summary.txt"
tar czf "$OUT/measured.tgz" -C "$RAW" . && rm -rf "$RAW"
cat "$OUT/summary.txt"
ls -la "$OUT"
