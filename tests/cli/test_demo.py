"""The whole pipeline as a new user runs it: `gensis demo --preset smoke` (about 2 minutes on 2 cores)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def gensis(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gensis.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "GENSIS_NO_PROGRESS": "1"}, **kw)


def test_demo_smoke_end_to_end_and_rerun_skips(tmp_path):
    out = tmp_path / "demo"
    r = gensis("demo", "--preset", "smoke", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    for col in ("DINO", "DINO w/ pixel disent.", "Gen-DINO", "raw pixels", "random-init ViT"):
        assert col in r.stdout
    assert "20-NN" in r.stdout and "linear probe" in r.stdout
    assert "How to read it" in r.stdout and "Gen-DINO − DINO" in r.stdout  # the block under the table
    results = json.loads((out / "results.json").read_text())
    for name in ("dino", "pixel", "gendino", "pixels", "random"):
        top1 = results[name]["knn"]["top1"]
        assert 0 <= top1 <= 100
    assert results["pixels"]["knn"]["top1"] > 30  # 10 classes: far above chance on raw pixels
    from gensis.pipeline.lanes import side_threads

    if side_threads():  # this environment gives the demo a side lane (2+ torch threads on a CPU)
        assert "[pixel] running (side lane)" in r.stderr and "[eval-early-dino] running (side lane)" in r.stderr
        assert [l for l in r.stderr.splitlines() if l.startswith("[eval] ")][-1] == "[eval] Gen-DINO"  # the rest: early
    assert (out / "report.md").is_file() and (out / "report.html").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "Gen-DINO" in md and "![" in md
    assert "## How to read it" in md and "| DINO − random-init ViT |" in md
    assert "figure skipped" not in md and (out / "report" / "embedding.png").is_file()  # Fig. 6 (eval.umap's map)
    # a second run finds every stage up to date and only re-prints the table
    r2 = gensis("demo", "--preset", "smoke", "--out", str(out), "--quiet", "--no-linear")
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert r2.stderr.count("up to date") >= 4
