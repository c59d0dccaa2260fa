#!/usr/bin/env bash
# The robustness issue's recipes side by side on a lent GPU machine (the `device` tool), from the
# repository root. The data is too large for one call (64 MiB), so two calls on the same warm machine:
#   tools/gpu_robust.sh stash  carrying .whl .devdata/bbbc039 .devdata/tnbc .devdata/split.json
#                              (wheels for albumentations and its needs, missing from that machine)
#   tools/gpu_robust.sh train  carrying .devdata/stage1_train .devdata/v2 (v2's weights: every run
#                              starts from them, so that the runs without TNBC never saw H&E)
# The second set (session of 2026-11-27 night; the tracked files plus the data are over one call's
# 64 MiB, so the wheels travel with the second call):
#   tools/gpu_robust.sh stash  carrying .devdata/bbbc039 .devdata/tnbc .devdata/split.json .devdata/wide-lso
#   tools/gpu_robust.sh stain  carrying .devdata/stage1_train .whl
#     cont / cont-lso   v5 / wide-lso continued with v5's recipe (labels resized centred), lr 2e-4
#     phe / phe-lso     the same with --pseudo-stain 0.25 (fluorescence crops rendered as H&E)
# The third set (prepared in the morning session of 2026-11-28, after a 3-epoch CPU try, docs/experiments
# "Stain grain in training"; self-contained since the session of 2026-11-28 midday, whose checkout
# no longer held the leave-out soup: run folders do not outlive a session):
#   tools/gpu_robust.sh stash  carrying .devdata/bbbc039 .devdata/tnbc .devdata/split.json .devdata/v2
#   tools/gpu_robust.sh grain  carrying .devdata/stage1_train .whl
#     grain / ctrl            v6 (shipped) continued with v5's recipe, with and without --stain-grain 0.5
#     grain-lso / ctrl-lso    v5's leave-TNBC-out recipe from v2 (wide-lso), with and without it
#   tools/gpu_robust.sh jitter carrying the same: as grain with --stain-jitter 0.2 (Tellez et al.'s
#                              strong HED jitter) instead of --stain-grain (docs/experiments "Stain amounts at
#                              test time": v6 loses 0.026 DSB score on H&E 15% paler than TNBC's;
#                              a 3-epoch CPU A/B from v2 found no gain on unseen H&E, so after grain)
# .devdata comes from `python tools/devdata.py --data ../shared/data/dsb2018/stage1_train.zip
# ../shared/data/bbbc039 ../shared/data/tnbc --eight-bit bbbc039` (train and valid parts of the default
# split, which is v4's) and v2's weights from git: `mkdir -p .devdata/v2 && git show
# b1864d3:src/attention_unet/weights/model.safetensors > .devdata/v2/model.safetensors`.
# The first set: four runs at once, each with 3 loader workers:
#   v4r          v4's recipe (crops of 128, scale 0.25-3) on all three datasets
#   v4r-lso      the same without TNBC: scored on all of TNBC afterwards, a stain it never saw
#   wide         crops of 256 (context for large nuclei), scale 0.25-6 (18-px nuclei at 4.5-108 px)
#   wide-lso     the same without TNBC
set -euo pipefail
KEEP=/root/keep
wheels() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $KEEP/site .whl/*.whl; }
case "$1" in
  stash)
    mkdir -p $KEEP && cp -r .devdata/bbbc039 .devdata/tnbc .devdata/split.json $KEEP/
    [ -d .devdata/wide-lso ] && cp -r .devdata/wide-lso $KEEP/
    [ -d .devdata/v2 ] && cp -r .devdata/v2 $KEEP/
    [ -d .whl ] || { nvidia-smi -L; exit 0; }
    wheels
    nvidia-smi -L
    PYTHONPATH=$KEEP/site:src python3 -c "import albumentations, torch, lightning, attention_unet.train as t; print('ok', torch.__version__, lightning.__version__, albumentations.__version__, torch.cuda.is_available())"
    ;;
  train|stain|grain|jitter)
    [ -d $KEEP/tnbc ] || { echo "no $KEEP: the machine was not the stash call's"; exit 3; }
    cp -r $KEEP/bbbc039 $KEEP/tnbc $KEEP/split.json .devdata/
    if [ "$1" != train ]; then
      wheels
      cp -r $KEEP/wide-lso $KEEP/v2 .devdata/ 2>/dev/null || true
    fi
    export PYTHONPATH=$KEEP/site:src ATTENTION_UNET_CACHE=/tmp/cache OUT=${OUT:-/tmp/out} PYTHONUNBUFFERED=1
    D=".devdata/stage1_train .devdata/bbbc039"
    python3 -c "from attention_unet import data; [data.load_records(p) for p in '$D .devdata/tnbc'.split()]"
    COMMON="--split-file .devdata/split.json --augment robust --balance
      --samples-per-epoch 3200 --loss bce+dice --scheduler cosine --batch-size 8 --epochs ${EPOCHS:-16}
      --monitor val_f1 --max-minutes ${MINUTES:-6.8} --seed 42 --accelerator gpu --devices 1 --workers 3"
    V4R="--input crop:128 --scale 0.25 3 --init-from .devdata/v2/model.safetensors --lr 5e-4"
    WIDE="--input crop:256 --scale 0.25 6 --init-from .devdata/v2/model.safetensors --lr 5e-4"
    CONT="--input crop:256 --scale 0.25 6 --lr 2e-4 --init-from"
    run() {  # name, flags; a run an earlier call on this machine finished (grain's ctrl, for jitter) is kept
      [ -f "/tmp/runs/$1/model/model.safetensors" ] && { echo "$1: finished by an earlier call, kept"; return; }
      OMP_NUM_THREADS=1 python3 -m attention_unet train $COMMON --out "/tmp/runs/$1" "${@:2}" > "/tmp/runs-$1.log" 2>&1 \
        || { echo "$1 failed"; tail -20 "/tmp/runs-$1.log"; }
    }
    if [ "$1" = train ]; then
      RUNS="v4r v4r-lso wide wide-lso"
      run v4r --data $D .devdata/tnbc $V4R & run v4r-lso --data $D $V4R &
      run wide --data $D .devdata/tnbc $WIDE & run wide-lso --data $D $WIDE &
    elif [ "$1" = grain ] || [ "$1" = jitter ]; then
      RUNS="$1 $1-lso ctrl ctrl-lso"
      V6=src/attention_unet/weights/model.safetensors
      TRY=$([ "$1" = grain ] && echo "--stain-grain 0.5" || echo "--stain-jitter 0.2")
      run "$1" --data $D .devdata/tnbc $CONT $V6 $TRY &
      run "$1-lso" --data $D $WIDE $TRY &
      run ctrl --data $D .devdata/tnbc $CONT $V6 &
      run ctrl-lso --data $D $WIDE &
    else
      RUNS="cont cont-lso phe phe-lso"
      V5=src/attention_unet/weights/model.safetensors LSO=.devdata/wide-lso/model.safetensors
      run cont --data $D .devdata/tnbc $CONT $V5 & run cont-lso --data $D $CONT $LSO &
      run phe --data $D .devdata/tnbc $CONT $V5 --pseudo-stain 0.25 &
      run phe-lso --data $D $CONT $LSO --pseudo-stain 0.25 &
    fi
    wait
    for r in $RUNS; do
      cp "/tmp/runs/$r/model/model.safetensors" "$OUT/$r.safetensors" || true
      cp "/tmp/runs-$r.log" "/tmp/runs/$r/train.log" || true
    done
    tar -C /tmp/runs -czf "$OUT/robust-runs.tgz" --exclude=checkpoints --exclude=model .
    RUNS=$RUNS python3 - <<'PY'
import csv
import os
for name in os.environ["RUNS"].split():
    try:
        rows = [r for r in csv.DictReader(open(f"/tmp/runs/{name}/metrics.csv")) if r.get("val_f1")]
    except OSError:
        print(name, "no metrics")
        continue
    best = max(rows, key=lambda r: float(r["val_f1"]))
    print(name, "epochs", len(rows), "best val_f1", best["val_f1"][:6], "at epoch", best["epoch"],
          "val_f1 by epoch", " ".join(r["val_f1"][:5] for r in rows))
PY
    ;;
esac
