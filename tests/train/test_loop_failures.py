"""Failures of a training run: a non-finite loss stops cleanly, --resume refuses other settings."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from gensis.checkpoint import load_checkpoint
from gensis.cli.main import main

TINY = ["--preset", "smoke", "train.threads=1", "train.amp=off", "data.limit=128", "optim.batch_size=32",
        "optim.epochs=2", "model.embed_dim=32", "model.num_heads=2", "model.depth=1"]


def test_nan_loss_stops_before_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    from gensis.ssl.methods.dino import DINO

    original = DINO.loss

    def poisoned(self, s_out, t_out, step):
        loss, parts = original(self, s_out, t_out, step)
        return (loss * float("nan") if step.it == 5 else loss), parts  # epoch 1 (4 steps per epoch)

    monkeypatch.setattr(DINO, "loss", poisoned)
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "pretrain" in err[0] and "epoch 1, step 5" in err[0] and "checkpoint.safetensors (epoch 0)" in err[0]
    tensors, info = load_checkpoint(run / "checkpoint.safetensors")
    assert info["meta"]["epoch"] == 0
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if v.is_floating_point())
    assert not (run / "teacher_backbone.safetensors").exists()

    monkeypatch.undo()
    assert main(["pretrain", "--out", str(run), *TINY, "optim.lr=0.5", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optim.lr (0.001 -> 0.5)" in err[0], err
    # speed-only keys may differ; the run then finishes from its checkpoint
    assert main(["pretrain", "--out", str(run), *TINY, "train.log_every=1", "--resume"]) == 0
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"
    w = load_file(run / "teacher_backbone.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values())
