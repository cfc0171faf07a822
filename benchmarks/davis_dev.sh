#!/usr/bin/env bash
# DAVIS label propagation on the development sequences (../shared/data/davis: bear, elephant, hike), a DINO
# encoder pretrained on 10k CIFAR-10 images vs a random-init ViT of the same architecture. Development only:
# nothing here is needed by tests or defaults. Usage: bash benchmarks/davis_dev.sh [SIZE] [OUT]
set -euo pipefail
SIZE=${1:-120}
OUT=${2:-/tmp/gensis-davis-dev}
DAVIS=${DAVIS:-../shared/data/davis}
CIFAR=${CIFAR:-../shared/data/cifar10-train-10k.npz}
mkdir -p "$OUT"
RUN="$OUT/dino-cifar"
if [ ! -f "$RUN/teacher_backbone.safetensors" ]; then
  # demo-preset ViT (192-d, depth 4), 32 px, patch 8. The numbers in docs/eval.md come from the teacher of this
  # run's epoch-2 checkpoint (the run was stopped there for time; its backbone was exported from checkpoint.safetensors)
  gensis pretrain --preset demo --data "$CIFAR" --out "$RUN" data.image_size=32 model.patch_size=8 \
    aug.local_size=16 optim.epochs=4
fi
for ENC in "$RUN" random; do
  NAME=$(basename "$ENC")
  gensis eval davis --encoder "$ENC" --random-like "$RUN" --data "$DAVIS" --size "$SIZE" \
    --out "$OUT/s$SIZE-$NAME" --json "$OUT/s$SIZE-$NAME.json" --cache none
done
