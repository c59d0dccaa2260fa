#!/usr/bin/env bash
# Runs on a lent GPU machine (the `device` tool), from the repository root, with .devdata/ carried:
# .devdata/dsb (train + valid parts of the reference split, flat layout, made from the archive),
# .devdata/split.json and .devdata/wheels (albumentations, missing from that machine's image).
#   tools/gpu_runs.sh gates        -> the shipped recipe with and without attention gates, equal budget
#   tools/gpu_runs.sh precision    -> 32-true vs bf16-mixed vs 16-mixed, equal budget
#   tools/gpu_runs.sh ttq          -> CPU time-to-quality, channels_last off vs on: two runs side by side,
#                                     each pinned to two cores (as on the 2-core development machine)
#   tools/gpu_runs.sh ttq-malloc   -> the same with glibc's default allocator vs the kept heap (allocator.py)
#   tools/gpu_runs.sh sweep        -> variants of the shipped recipe (nuclei-v2), side by side on the GPU,
#                                     each with the epochs that fit the 88-minute CPU budget
#   tools/gpu_runs.sh distance     -> the shipped recipe with and without the distance output, same seed
set -euo pipefail
python3 -m pip install -q --no-deps --no-index .devdata/wheels/*.whl
export PYTHONPATH=src ATTENTION_UNET_CACHE=/tmp/cache OUT=${OUT:-/tmp/out}
RECIPE="--data .devdata/dsb --split-file .devdata/split.json --preset small --depth 4 --input crop:128 --scale 0.25 2
  --augment full --balance --samples-per-epoch 3200 --norm percentile --loss bce+dice --lr 1e-3 --scheduler cosine
  --batch-size 8 --epochs 36 --monitor val_f1 --seed 42 --accelerator gpu --devices 1 --workers 8"
run() {  # name, minutes, extra flags
  python3 -m attention_unet train $RECIPE --max-minutes "$2" --out "/tmp/runs/$1" "${@:3}" > "/tmp/runs-$1.log" 2>&1 || { tail -30 "/tmp/runs-$1.log"; exit 1; }
  cp "/tmp/runs/$1/metrics.csv" "$OUT/$1-metrics.csv"
  cp "/tmp/runs/$1/model/model.safetensors" "$OUT/$1-model.safetensors"
  python3 - "$1" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(f"/tmp/runs/{sys.argv[1]}/metrics.csv")) if r["val_f1"]]
best = max(rows, key=lambda r: float(r["val_f1"]))
print(sys.argv[1], "epochs", len(rows), "minutes", rows[-1]["minutes"][:5], "best val_f1", best["val_f1"][:6], "at epoch", best["epoch"])
PY
}
nvidia-smi --query-gpu=name --format=csv,noheader
case "$1" in
  gates) run gates 4.5; run plain 4.5 --no-attention ;;
  precision) run fp32 2.5 --precision 32-true; run bf16 2.5 --precision bf16-mixed; run fp16 2.5 --precision 16-mixed ;;
  sweep)
    V2="--norm polarity --contour --workers 2"
    python3 -c "from attention_unet import data; data.load_records('.devdata/dsb')"  # fill the cache once
    for v in "control:$V2" "seed7:$V2 --seed 7" "nocontour:--norm polarity --workers 2" \
             "crop256:$V2 --input crop:256 --samples-per-epoch 800" "width24:$V2 --width 24 --epochs 16" \
             "lr2e-3:$V2 --lr 2e-3" "imagedice:$V2 --loss bce+image-dice"; do
      OMP_NUM_THREADS=2 run "${v%%:*}" "${SWEEP_MINUTES:-7}" --epochs 32 ${v#*:} &
    done
    wait
    tar -C "$OUT" -czf "$OUT/sweep-metrics.tgz" $(cd "$OUT" && ls *-metrics.csv) && rm -f "$OUT"/*-metrics.csv "$OUT"/*-model.safetensors
    ;;
  distance)
    V2="--norm polarity --contour --workers 7 --epochs ${DISTANCE_EPOCHS:-24}"
    python3 -c "from attention_unet import data; data.load_records('.devdata/dsb')"  # fill the cache once
    OMP_NUM_THREADS=2 run control 5 $V2 & OMP_NUM_THREADS=2 run distance 5 $V2 --distance &
    wait
    tar -C "$OUT" -czf "$OUT/distance-metrics.tgz" control-metrics.csv distance-metrics.csv
    ;;
  ttq|ttq-malloc)
    CPU="--accelerator cpu --workers 0 --norm polarity --contour"
    if [ "$1" = ttq ]; then A="nhwc:"; B="nchw:--no-channels-last"; ENV_B=""; else A="kept:"; B="default:"; ENV_B="ATTENTION_UNET_KEEP_FREED=0"; fi
    python3 -c "from attention_unet import data; data.load_records('.devdata/dsb')"  # fill the cache once
    OMP_NUM_THREADS=2 taskset -c 0,1 bash -c "$(declare -f run); RECIPE='$RECIPE'; OUT=$OUT; run ${A%%:*} ${TTQ_MINUTES:-6} $CPU ${A#*:}" &
    env $ENV_B OMP_NUM_THREADS=2 taskset -c 2,3 bash -c "$(declare -f run); RECIPE='$RECIPE'; OUT=$OUT; run ${B%%:*} ${TTQ_MINUTES:-6} $CPU ${B#*:}" &
    wait
    python3 - "${A%%:*}" "${B%%:*}" <<'PY'
import csv, os, sys
for name in sys.argv[1:]:
    rows = [r for r in csv.DictReader(open(f"{os.environ['OUT']}/{name}-metrics.csv")) if r["val_f1"]]
    print(name, "minutes at the end of each epoch:", " ".join(f"{float(r['minutes']):.2f}" for r in rows))
    for target in (0.80, 0.83, 0.85):
        first = next((r for r in rows if float(r["val_f1"]) >= target), None)
        print(name, f"first val_f1 >= {target}:", f"{float(first['minutes']):.2f} min (epoch {first['epoch']})" if first else "not reached")
PY
    ;;
esac
