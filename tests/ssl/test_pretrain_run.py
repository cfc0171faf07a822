"""End-to-end pretraining runs: outputs, kill + --resume equality, 2-process DDP (gloo) on CPU."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SMOKE = ["--preset", "smoke", "train.threads=1", "train.amp=off", "data.limit=384", "optim.epochs=4",
         "optim.batch_size=64"]


def gensis(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "gensis.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "GENSIS_NO_PROGRESS": "1", **(env or {})}, **kw)


def _losses(run: Path):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def test_pretrain_writes_run_and_resume_after_kill_is_identical(tmp_path):
    full = tmp_path / "full"
    r = gensis("pretrain", "--out", str(full), *SMOKE, "train.log_every=1")
    assert r.returncode == 0, r.stderr
    for f in ("config.yaml", "manifest.json", "metrics.jsonl", "checkpoint.safetensors",
              "teacher_backbone.safetensors", "student_backbone.safetensors"):
        assert (full / f).is_file(), f
    m = json.loads((full / "manifest.json").read_text())
    assert m["status"] == "done" and m["inputs"]["data_identity"] and m["versions"]["torch"]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "gensis.cli.main", "pretrain", "--out", str(killed), *SMOKE,
                             "train.log_every=1"], env={**os.environ, "GENSIS_NO_PROGRESS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # a real kill, possibly in the middle of the next epoch
    proc.wait()
    assert not (killed / "teacher_backbone.safetensors").exists(), "run finished before it could be killed"
    r = gensis("pretrain", "--out", str(killed), *SMOKE, "train.log_every=1", "--resume")
    assert r.returncode == 0, r.stderr
    a, b = load_file(full / "teacher_backbone.safetensors"), load_file(killed / "teacher_backbone.safetensors")
    assert a.keys() == b.keys()
    if torch.cuda.is_available():  # device auto = CUDA: some backward kernels (the position-embedding
        # interpolation's) accumulate with atomics, so two uninterrupted GPU runs already differ by ~1e-11
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
        assert [s for s, _ in _losses(full)] == [s for s, _ in _losses(killed)]
        assert [v for _, v in _losses(full)] == pytest.approx([v for _, v in _losses(killed)], rel=1e-5)
        return
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _losses(full) == _losses(killed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
           f"--master_port={_free_port()}", "-m", "gensis.cli.main", "pretrain", "--out", str(out), *SMOKE,
           "optim.epochs=2", "train.log_every=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "GENSIS_NO_PROGRESS": "1",
                                                                 "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    steps = [s for s, _ in _losses(out)]
    assert steps == sorted(set(steps)) and len(steps) == 2 * (384 // 64)  # one writer, every step once
    assert json.loads((out / "manifest.json").read_text())["status"] == "done"
    w = load_file(out / "teacher_backbone.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values())
