"""``gensis pretrain --quiet``: no progress bar, but the final line and errors still print."""

import os
import subprocess
import sys

TINY = ["--preset", "smoke", "train.threads=1", "train.amp=off", "data.limit=64", "optim.epochs=1",
        "optim.batch_size=32"]


def _gensis(*args):
    env = {k: v for k, v in os.environ.items() if k != "GENSIS_NO_PROGRESS"}  # the option alone must silence
    return subprocess.run([sys.executable, "-m", "gensis.cli.main", *args], capture_output=True, text=True,
                          env={**env, "OMP_NUM_THREADS": "1"})


def test_pretrain_quiet_prints_no_bar_but_final_line_and_errors(tmp_path):
    out = tmp_path / "run"
    r = _gensis("pretrain", "--out", str(out), "--quiet", *TINY)
    assert r.returncode == 0, r.stderr
    assert "it/s" not in r.stderr and "%|" not in r.stderr, r.stderr  # no tqdm bar
    assert r.stdout.strip() == f"pretraining done: {out}"
    again = _gensis("pretrain", "--out", str(out), "--quiet", *TINY)  # a user error is not silenced
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "already holds a finished" in lines[0], again.stderr
