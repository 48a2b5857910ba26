#!/usr/bin/env bash
# Table 1's CIFAR-10 cells at full scale on one GPU, through Keras' JAX backend.
#
#   bash benchmarks/device/table1.sh          # on the GPU machine (see below)
#   SKIP_WHEELS=1 PYTHON=.venv/bin/python bash benchmarks/device/table1.sh --tiny
#       # a rehearsal on any CPU: 100 images/class, width 0.1, 1 epoch
#       # (about 7.5 min on this project's 2-core CPU)
#
# What it runs (python -m normprop_tf.train_jax, docs/method.md "Table 1"):
#   nin_cifar10 and nin_cifar10_batchnorm (C10), nin_cifar10_aug and
#   nin_cifar10_batchnorm_aug (C10+aug), seed 1, as 4 processes sharing the
#   GPU (a memory fraction each); then, if the measured speed leaves time,
#   seed 2 of the C10 pair.
# Sizing: a 200-step NormProp calibration run measures seconds per step (the
# last 100 steps) and the start-up (its wall time minus its steps). Four
# processes sharing the GPU are assumed to run at most 4x slower each (2x for
# two): an assumption, not a measurement. The 4 seed-1 cells start only if
# they fit in BUDGET_S (default 480 s, inside the 600 s a device command may
# take); otherwise the C10 pair, if it fits; otherwise nothing. Seed 2 of the
# C10 pair runs only if it fits in what is left.
#
# Every run writes straight into $OUT/runs/fullscale/<run>, so whatever
# finished comes back even if the command is cut off. Hidden-layer statistics
# are probed once per epoch (900 steps), not every 50 steps as in the full
# configs, to keep the records small.
#
# Inputs (folders inside the repository that .gitignore lists, carried to the
# machine with the device tool's `carry`):
#   .data/cifar10-jpg.tar.gz   the offline JPEG CIFAR-10 copy:
#                              mkdir -p .data && cp ../shared/data/cifar10-jpg.tar.gz .data/
#   .whl/                      wheels the GPU image lacks (keras, optree, namex,
#                              gin-config), fetched with:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 \
#       --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl \
#       keras==3.15.1 optree==0.20.0 namex==0.1.0 gin-config==0.5.0
#   (SKIP_WHEELS=1 uses the Python environment as it is, e.g. for --tiny here.)
#   Both are ignored by git: a remote runner must carry them explicitly
#   (19.6 MB and 2.9 MB).
#
# Output, under $OUT: table1.log (everything printed), runs/fullscale/<run>/
# (as written), records.tar.gz (each run's metrics.jsonl, summary.json,
# config.json, operative_config.gin, flags.json, under fullscale/<run>/),
# table1.txt (the cells, one per line).
# Locally: tar -xzf records.tar.gz -C reports/runs && python -m reports.make_report
set -euo pipefail

TINY=0
[[ "${1:-}" == "--tiny" ]] && TINY=1
OUT="${OUT:-/tmp/table1_out}"
PYTHON="${PYTHON:-python3}"
BUDGET_S="${BUDGET_S:-480}"
WORK="${WORK:-/tmp/table1_work}"
SOURCE="${SOURCE:-.data/cifar10-jpg.tar.gz}"
RUNS="$OUT/runs"
mkdir -p "$OUT/logs" "$WORK" "$RUNS"
exec > >(tee -a "$OUT/table1.log") 2>&1
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

if [[ -z "${SKIP_WHEELS:-}" ]]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export KERAS_BACKEND=jax
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.2}"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total \
    --format=csv,noheader || echo "no nvidia-smi: $(uname -m) CPU"

common=(--gin_bindings="dataset.source = '$SOURCE'"
        --gin_bindings="dataset.data_dir = '$WORK/data/cifar10'"
        --gin_bindings="trainer.steps_per_loop = 50"
        --gin_bindings="hidden_stats.every_steps = 900")
if (( TINY )); then
  common+=(--gin_bindings="dataset.subset_per_class = {'train': 100, 'test': 20}"
           --gin_bindings="dataset.validation_size = 100"
           --gin_bindings="nin.width = 0.1" --gin_bindings="trainer.epochs = 1"
           --gin_bindings="trainer.steps_per_loop = 2"
           --gin_bindings="trainer.log_every_steps = 6"
           --gin_bindings="trainer.eval_every_steps = 18"
           --gin_bindings="hidden_stats.every_steps = 18")
fi

train() {  # train <gin stem> <run name> <seed> [more bindings...]
  local gin=$1 name=$2 seed=$3; shift 3
  "$PYTHON" -m normprop_tf.train_jax --gin_file="gin/$gin.gin" \
      --model_dir="$RUNS/fullscale/$name" "${common[@]}" \
      --gin_bindings="experiment.seed = $seed" "$@"
}

echo "== [$(elapsed) s] decoding the data once (Pillow), cached for every run"
"$PYTHON" -m normprop_tf.train_jax --gin_file=gin/nin_cifar10.gin \
    --prepare_only "${common[@]}"

calibration_steps=200
calibration_log=100
(( TINY )) && calibration_steps=12 && calibration_log=6
echo "== [$(elapsed) s] calibration: $calibration_steps steps of NormProp (timed: the last $calibration_log)"
t0=$(elapsed)
"$PYTHON" -m normprop_tf.train_jax --gin_file=gin/nin_cifar10.gin \
    --model_dir="$WORK/calibration" "${common[@]}" \
    --gin_bindings="experiment.seed = 1" --gin_bindings="trainer.epochs = None" \
    --gin_bindings="trainer.train_steps = $calibration_steps" \
    --gin_bindings="trainer.log_every_steps = $calibration_log" \
    --gin_bindings="hidden_stats.every_steps = 0" \
    --gin_bindings="trainer.eval_every_steps = 0" > "$WORK/calibration.log" 2>&1 \
    || { tail -n 20 "$WORK/calibration.log"; exit 1; }
calibration_s=$(( $(elapsed) - t0 ))
read -r sec_per_step steps_per_epoch < <("$PYTHON" - "$WORK/calibration" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + '/metrics.jsonl')]
config = json.load(open(sys.argv[1] + '/config.json'))
print([r['value'] for r in rows if r['split'] == 'train' and
       r['metric'] == 'sec_per_step'][-1], config['length']['steps_per_epoch'])
PY
)
epochs=50
(( TINY )) && epochs=1
steps=$(( epochs * steps_per_epoch ))
# Start-up: what the calibration run took beyond its steps (imports, data
# loading, compilation, saving); every run pays it, plus its evaluations.
startup=$("$PYTHON" -c "print(max(10, int($calibration_s - $sec_per_step * $calibration_steps)))")
echo "calibration: $calibration_s s in all, $sec_per_step s/step alone, start-up $startup s; a cell is $steps steps"
cost() {  # cost <processes sharing the device>: seconds for one such round
  "$PYTHON" -c "print(int($1 * $sec_per_step * $steps * 1.1 + $startup))"
}
four=$(cost 4)
pair=$(cost 2)
echo "estimates: 4 cells together $four s, the C10 pair $pair s (budget $BUDGET_S s, $(elapsed) s used)"

pids=()
launch() {  # launch <gin stem> <run name> <seed>: in the background
  train "$1" "$2" "$3" > "$OUT/logs/$2.log" 2>&1 &
  pids+=("$!")
}
if (( four + $(elapsed) <= BUDGET_S )); then
  echo "== [$(elapsed) s] seed 1: the 4 C10 / C10+aug cells, concurrently"
  launch nin_cifar10 nin_cifar10-s1 1
  launch nin_cifar10_batchnorm nin_cifar10_batchnorm-s1 1
  launch nin_cifar10_aug nin_cifar10_aug-s1 1
  launch nin_cifar10_batchnorm_aug nin_cifar10_batchnorm_aug-s1 1
elif (( pair + $(elapsed) <= BUDGET_S )); then
  echo "== [$(elapsed) s] too slow for 4 cells: the C10 pair only"
  launch nin_cifar10 nin_cifar10-s1 1
  launch nin_cifar10_batchnorm nin_cifar10_batchnorm-s1 1
else
  echo "== [$(elapsed) s] too slow even for the C10 pair ($pair s): nothing trained"
fi
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
if (( status == 0 && ${#pids[@]} > 0 && pair + $(elapsed) <= BUDGET_S )); then
  echo "== [$(elapsed) s] seed 2 of the C10 pair (estimate $pair s)"
  pids=()
  launch nin_cifar10 nin_cifar10-s2 2
  launch nin_cifar10_batchnorm nin_cifar10_batchnorm-s2 2
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
else
  echo "== [$(elapsed) s] no time for seed 2 (estimate $pair s)"
fi

for log in "$OUT"/logs/*.log; do echo "--- $(basename "$log")"; tail -n 3 "$log"; done
"$PYTHON" - "$RUNS/fullscale" > "$OUT/table1.txt" <<'PY'
import json, os, sys
root = sys.argv[1]
for name in sorted(os.listdir(root)):
  path = os.path.join(root, name, 'summary.json')
  if os.path.exists(path):
    s = json.load(open(path))
    print(f"{name}: test error {100 * s['final_test_error']:.2f}%, validation "
          f"{100 * s['final_validation_error']:.2f}%, {s['steps']} steps, "
          f"{s['train_seconds']:.0f} s, {s['hardware'].get('device_kind')}")
  else:
    print(f'{name}: no summary (failed or unfinished)')
PY
cat "$OUT/table1.txt"
tar -czf "$OUT/records.tar.gz" -C "$RUNS" --exclude='*.keras' \
    --exclude='.lock' --exclude='*.tmp*' fullscale
echo "== [$(elapsed) s] done (status $status): $OUT/records.tar.gz"
exit $status
