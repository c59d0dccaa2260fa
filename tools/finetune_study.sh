#!/usr/bin/env bash
# Fine-tuning study: fine-tune the leave-TNBC-out model (LSO_MODEL) on 1/3/5/10 TNBC images vs the same
# recipe from scratch; score each on the 27 TNBC images in none of the subsets (docs/experiments, "Fine-tuning").
# Usage: tools/finetune_study.sh LSO_MODEL   (after python tools/finetune_subsets.py)
set -u
LSO=${1:?the leave-TNBC-out model}
cd "$(dirname "$0")/.."
AU=.venv/bin/attention-unet
EV="evaluate --data ../shared/data/tnbc --split-file runs/ft/split.json --split test --protocol native --no-strips --json"
log() { echo "$(date +%T) $*" >> runs/ft/results.log; }
rm -rf runs/ft/ft-* runs/ft/scratch-* runs/ft/eval-*  # a rerun is a new study (train refuses a filled --out)
$AU $EV --model $LSO --out runs/ft/eval-base 2>/dev/null | sed 's/^/base /' >> runs/ft/results.log
for k in 5 1 3 10; do
  s=$(date +%s)
  $AU finetune runs/ft/tnbc-$k --model $LSO --out runs/ft/ft-$k --seed 42 > runs/ft/ft-$k.log 2>&1
  log "ft-$k train seconds $(( $(date +%s) - s ))"
  $AU $EV --model runs/ft/ft-$k --out runs/ft/eval-ft-$k 2>/dev/null | sed "s/^/ft-$k /" >> runs/ft/results.log
done
for k in 5 1 3 10; do
  s=$(date +%s)
  $AU train --data runs/ft/tnbc-$k --preset small --depth 4 --contour --norm polarity --input crop:128 --scale 0.5 2 --augment robust \
    --loss bce+dice --lr 1e-3 --scheduler cosine --epochs 10 --samples-per-epoch 256 --monitor val_f1 --early-stopping 10 \
    --max-minutes 4.5 --valid-strip 128 --seed 42 --out runs/ft/scratch-$k > runs/ft/scratch-$k.log 2>&1
  log "scratch-$k train seconds $(( $(date +%s) - s ))"
  .venv/bin/python tools/ship_model.py runs/ft/scratch-$k --scale auto --contour-threshold 0.3 --h 2 --min-area 16 --out runs/ft/scratch-$k/shipped >/dev/null
  $AU $EV --model runs/ft/scratch-$k/shipped --out runs/ft/eval-scratch-$k 2>/dev/null | sed "s/^/scratch-$k /" >> runs/ft/results.log
done
log done
