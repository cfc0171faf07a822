"""A 1-GPU smoke of every stage and of the demo, run as a user runs them (the command line, in this process so
that the GPU's memory statistics show the work really ran there). Marked ``cuda``: skipped without a GPU;
`pytest -m cuda` (benchmarks/gpu_check.sh) runs them on one.

Each stage gets ``device=cuda`` explicitly (``auto`` would also pick the GPU) and must allocate GPU memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cuda, pytest.mark.slow]

PRE = ["--preset", "smoke", "train.device=cuda", "optim.epochs=1"]


def _gensis(*argv) -> int:
    from gensis.cli.main import main

    return main([str(a) for a in argv])


def _on_gpu(*argv) -> int:
    """Run ``gensis argv``; assert it succeeded and allocated CUDA memory; return the peak in bytes."""
    import torch

    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.max_memory_allocated()
    assert _gensis(*argv) == 0, argv
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    assert peak > before, f"gensis {' '.join(map(str, argv))} allocated nothing on the GPU"
    return peak


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """DINO -> E-LDM -> bank, each on the GPU (later tests reuse them)."""
    root = tmp_path_factory.mktemp("cuda-stages")
    r = {k: root / k for k in ("dino", "eldm", "bank")}
    _on_gpu("pretrain", "--out", r["dino"], *PRE)
    _on_gpu("eldm", "train", "--encoder", r["dino"], "--out", r["eldm"], "--preset", "smoke", "--quiet",
            "train.device=cuda")
    _on_gpu("bank", "generate", "--eldm", r["eldm"], "--out", r["bank"], "--preset", "smoke", "--quiet",
            "run.device=cuda")
    return r


def test_dino_eldm_bank_on_gpu(runs):
    assert (runs["dino"] / "teacher_backbone.safetensors").is_file()
    losses = [json.loads(line)["loss"] for line in (runs["dino"] / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses and all(v == v and abs(v) < 1e6 for v in losses)  # finite
    header = json.loads((runs["bank"] / "bank.json").read_text())
    assert header["status"] == "done"
    assert _gensis("bank", "verify", runs["bank"], "--decode") == 0


def test_gendino_and_pixel_ablation_on_gpu(runs, tmp_path):
    _on_gpu("pretrain", "--out", tmp_path / "gendino", "--bank", runs["bank"], *PRE)
    _on_gpu("pretrain", "--out", tmp_path / "pixel", "--interp", "pixel", *PRE)
    assert (tmp_path / "gendino" / "teacher_backbone.safetensors").is_file()


def test_autoencoder_and_latent_eldm_on_gpu(runs, tmp_path):
    _on_gpu("eldm", "train-ae", "--out", tmp_path / "ae", "--preset", "smoke", "--quiet", "train.device=cuda")
    _on_gpu("eldm", "train", "--encoder", runs["dino"], "--ae", tmp_path / "ae", "--out", tmp_path / "eldm-vq",
            "--preset", "smoke", "--quiet", "train.device=cuda")


def test_eldm_sample_and_eval_on_gpu(runs, tmp_path):
    _on_gpu("eldm", "sample", "--eldm", runs["eldm"], "--out", tmp_path / "fig", "--device", "cuda")
    _on_gpu("eldm", "eval", "--eldm", runs["eldm"], "--json", tmp_path / "ev.json", "--device", "cuda", "--quiet")
    assert json.loads((tmp_path / "ev.json").read_text())


def test_knn_and_linear_eval_on_gpu(runs, tmp_path):
    _on_gpu("eval", "knn", "--encoder", runs["dino"], "--device", "cuda", "--json", tmp_path / "knn.json")
    _on_gpu("eval", "linear", "--encoder", runs["dino"], "--device", "cuda", "--epochs", "2",
            "--json", tmp_path / "lin.json")
    knn = json.loads((tmp_path / "knn.json").read_text())
    assert 0 <= knn["top1"] <= 100


def test_demo_smoke_on_gpu(tmp_path, capsys):
    """`gensis demo --preset smoke` on a GPU machine: every stage's device is `auto`, i.e. the GPU."""
    _on_gpu("demo", "--preset", "smoke", "--out", tmp_path / "demo", "--quiet", "--no-linear")
    out = capsys.readouterr().out
    assert "Gen-DINO" in out and "20-NN" in out
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert all(0 <= results[k]["knn"]["top1"] <= 100 for k in ("dino", "pixel", "gendino"))
