#!/usr/bin/env bash
# GPU-scale study (issue 15.6): DINO -> E-LDM (autoencoder + denoiser) -> bank -> Gen-DINO, and the pixel
# ablation ("DINO w/ pixel disent."), with the `gpu` presets (32 px colour images, ViT-tiny/4, 30 epochs),
# then the 20-NN table of every run and of the raw-pixel and random-init baselines, with the paired
# differences Gen-DINO - DINO and pixel - DINO (mean +- std over SEEDS when several are given).
#
#   DATA=path/to/cifar10-train-10k.npz OUT=runs/science-gpu bash benchmarks/science_gpu.sh
#
# Environment (all optional):
#   DATA      labelled colour images (an .npz, a folder or builtin:NAME). Default: the first of
#             shared/data/cifar10-train-10k.npz, ../shared/data/cifar10-train-10k.npz that exists.
#   OUT       output folder (default runs/science-gpu); every stage resumes if killed
#   SEEDS     space-separated seeds (default "0"; "0 1 2" for mean +- std)
#   DEVICE    cuda | cpu | auto (default auto)
#   PRE_OV, ELDM_OV, BANK_OV   extra key=value overrides of each stage (the CPU dry run uses tiny ones)
#   PY        python interpreter (default: .venv/bin/python if present, else python)
#
# The `gpu` preset keeps timm's initialisation (model.init: timm). The CPU `demo` preset's mimetic attention +
# sine-cosine positions (docs/pretrain.md, "Mimetic attention") are unmeasured at this scale; to measure them, run
# the study a second time with the same seeds: PRE_OV="model.init=mimetic+sincos" OUT=runs/science-gpu-mimetic
# (the E-LDM and bank then condition on that DINO; pair the two results.json tables by seed).
#
# Sizing: about 8 minutes for one seed of 8,000 training images on one H100/H200. This is an ESTIMATE
# (docs/pretrain.md, "GPU-scale study"), never measured on a GPU: the script prints each stage's wall time
# so the first GPU run calibrates it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUT=${OUT:-runs/science-gpu}
SEEDS=${SEEDS:-0}
DEVICE=${DEVICE:-auto}
PRE_OV=${PRE_OV:-}
ELDM_OV=${ELDM_OV:-}
BANK_OV=${BANK_OV:-}
if [ -z "${DATA:-}" ]; then
  for cand in shared/data/cifar10-train-10k.npz ../shared/data/cifar10-train-10k.npz; do
    if [ -f "$cand" ]; then DATA=$cand; break; fi
  done
fi
if [ -z "${DATA:-}" ]; then
  echo "science_gpu.sh: set DATA to labelled colour images (e.g. a CIFAR-10 .npz with images and labels)" >&2
  exit 2
fi
export GENSIS_NO_PROGRESS=1 HF_HUB_OFFLINE=1
G="$PY -m gensis.cli.main"
mkdir -p "$OUT"
TIMES="$OUT/stage_times.tsv"
: > "$TIMES"

stage() {  # stage NAME FOLDER COMMAND...: skipped when FOLDER holds a finished run, resumed when it was killed
  local name=$1 dir=$2; shift 2
  local t0=$SECONDS
  if [ -f "$dir/manifest.json" ] && grep -q '"status": "done"' "$dir/manifest.json"; then
    echo "[$name] done before, skipped"
  elif [ -f "$dir/bank.json" ] && grep -q '"status": "done"' "$dir/bank.json"; then
    echo "[$name] done before, skipped"
  else
    local resume=()
    if [ -d "$dir" ] && [ "$name" != bank ]; then resume=(--resume); fi
    echo "[$name] gensis $*"
    $G "$@" "${resume[@]}"
  fi
  echo -e "$name\t$((SECONDS - t0))" | tee -a "$TIMES" | awk -F'\t' '{print "[" $1 "] " $2 " s"}'
}

T_ALL=$SECONDS
RUNS=()
for S in $SEEDS; do
  R="$OUT/seed$S"
  mkdir -p "$R"
  # shellcheck disable=SC2086  # the *_OV variables are lists of key=value words
  stage dino    "$R/dino"    pretrain --preset gpu --data "$DATA" --out "$R/dino" \
        train.seed=$S train.device=$DEVICE $PRE_OV
  # shellcheck disable=SC2086
  stage ae      "$R/eldm-ae" eldm train-ae --preset gpu --data "$DATA" --out "$R/eldm-ae" --quiet \
        train.seed=$S train.device=$DEVICE $ELDM_OV
  # shellcheck disable=SC2086
  stage eldm    "$R/eldm"    eldm train --preset gpu --data "$DATA" --encoder "$R/dino" --ae "$R/eldm-ae" \
        --out "$R/eldm" --quiet train.seed=$S train.device=$DEVICE $ELDM_OV
  # shellcheck disable=SC2086
  stage bank    "$R/bank"    bank generate --preset gpu --data "$DATA" --eldm "$R/eldm" --out "$R/bank" --quiet \
        gen.seed=$S run.device=$DEVICE $BANK_OV
  # shellcheck disable=SC2086
  stage gendino "$R/gendino" pretrain --preset gpu --data "$DATA" --bank "$R/bank" --out "$R/gendino" \
        train.seed=$S train.device=$DEVICE $PRE_OV
  # shellcheck disable=SC2086
  stage pixel   "$R/pixel"   pretrain --preset gpu --data "$DATA" --interp pixel --out "$R/pixel" \
        train.seed=$S train.device=$DEVICE $PRE_OV
  RUNS+=("$R")
done
t0=$SECONDS
$PY benchmarks/science_gpu_table.py --data "$DATA" --device "$DEVICE" --json "$OUT/results.json" "${RUNS[@]}"
echo -e "eval\t$((SECONDS - t0))" >> "$TIMES"
echo "total wall time $((SECONDS - T_ALL)) s (stage times: $TIMES)"
