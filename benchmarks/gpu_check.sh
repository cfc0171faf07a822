#!/usr/bin/env bash
# The GPU check, in one go on a machine with a CUDA GPU (about 10 minutes in all):
#   1. `pytest -m cuda`: every test that has a CUDA variant, including a 1-GPU smoke of every stage and of
#      `gensis demo --preset smoke` (tests/gpu/test_cuda_stages.py); budget PYTEST_BUDGET s (default 270);
#      SKIP_PYTEST=1 skips it
#   2. the GPU-scale study (benchmarks/science_gpu.sh, `gpu` presets, one seed) in STUDY_DIR (default
#      runs/gpu-check-study, inside the checkout so that it survives between commands on the same machine);
#      budget STUDY_BUDGET s (default 270). Cut short by the budget, it resumes where it stopped when the script
#      runs again: `SKIP_PYTEST=1 bash benchmarks/gpu_check.sh`.
# Everything it reports is written under $OUT (default ./gpu-check-out): environment, pytest output and
# junit XML, the study's log, stage times and results.json. The exit status is pytest's (0: GPU path verified).
#
#   OUT=/path/out DATA=cifar10-train-10k.npz bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3 || echo python )}
export PY PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" GENSIS_NO_PROGRESS=1 HF_HUB_OFFLINE=1
T0=$SECONDS

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "nvidia-smi: not found"
  $PY - <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
EOF
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"
if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: torch sees no CUDA device here; nothing to check" | tee -a "$OUT/environment.txt" >&2
  exit 3
fi

# 1. the cuda-marked tests (skipped, never errors, where there is no GPU)
PYTEST_RC=0
if [ -z "${SKIP_PYTEST:-}" ]; then
  timeout "${PYTEST_BUDGET:-270}" $PY -m pytest -m cuda -q -rs -p no:cacheprovider \
    --junitxml="$OUT/pytest-cuda.xml" > "$OUT/pytest-cuda.txt" 2>&1
  PYTEST_RC=$?
  tail -n 25 "$OUT/pytest-cuda.txt"
  echo "pytest -m cuda: exit $PYTEST_RC after $((SECONDS - T0)) s" | tee "$OUT/summary.txt"
fi

# 2. the GPU-scale study (one seed); DATA defaults as in science_gpu.sh, else the embedded grey set
T1=$SECONDS
if [ -z "${DATA:-}" ] && [ ! -f shared/data/cifar10-train-10k.npz ] && [ ! -f ../shared/data/cifar10-train-10k.npz ]; then
  export DATA=builtin:animal-mnist
  echo "no DATA and no CIFAR-10 .npz found: the study runs on builtin:animal-mnist (not colour images)" \
    | tee -a "$OUT/summary.txt"
fi
STUDY_DIR=${STUDY_DIR:-runs/gpu-check-study}
mkdir -p "$(dirname "$STUDY_DIR")"
OUT="$STUDY_DIR" SEEDS="${SEEDS:-0}" timeout "${STUDY_BUDGET:-270}" bash benchmarks/science_gpu.sh \
  >> "$STUDY_DIR.log" 2>&1
STUDY_RC=$?
cp "$STUDY_DIR.log" "$OUT/study.txt"
cp "$STUDY_DIR"/stage_times.tsv "$STUDY_DIR"/results.json "$OUT/" 2>/dev/null
tail -n 30 "$OUT/study.txt"
echo "science_gpu.sh: exit $STUDY_RC after $((SECONDS - T1)) s$([ $STUDY_RC = 124 ] && echo ' (budget reached: SKIP_PYTEST=1 bash benchmarks/gpu_check.sh resumes it)')" \
  | tee -a "$OUT/summary.txt"
echo "total $((SECONDS - T0)) s; results in $OUT/" | tee -a "$OUT/summary.txt"
exit $PYTEST_RC
