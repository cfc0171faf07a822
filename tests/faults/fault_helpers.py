"""Helpers of the fault-injection suite (imported by its tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# a pretraining run that takes seconds: 16 px, one-block ViT, small head
TINY_PRETRAIN = ["--preset", "smoke", "data.image_size=16", "model.patch_size=4", "model.embed_dim=32",
                 "model.depth=1", "model.num_heads=2", "dino.out_dim=64", "dino.hidden_dim=64",
                 "dino.bottleneck_dim=16", "aug.local_size=8", "optim.batch_size=16", "optim.epochs=2",
                 "data.limit=null", "train.threads=1", "train.amp=off", "data.num_workers=0"]


def main(*argv) -> int:
    from gensis.cli.main import main as _main

    return _main([str(a) for a in argv])


def gensis(*argv, preexec_fn=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gensis.cli.main", *map(str, argv)], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec_fn,
                          env={**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"})


def assert_refused(rc: int, err: str, *needles: str, max_lines: int = 2) -> str:
    """A non-zero exit, at most a few lines, no traceback, and the error line names what it should."""
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert rc != 0, err
    assert "Traceback" not in err, err[-3000:]
    assert 1 <= len(lines) <= max_lines, err[-3000:]
    for n in needles:
        assert str(n) in lines[-1], (n, lines[-1])
    return lines[-1]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), to show nothing was damaged."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
