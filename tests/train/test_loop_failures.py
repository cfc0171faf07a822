"""Failures of a training run: a non-finite loss stops cleanly (on the host-checked and the deferred device path),
--resume refuses other settings."""

from __future__ import annotations

import json

import pytest
import torch
from devices import DEVICES
from safetensors.torch import load_file
from train_state import assert_same_state, capture_before_step, task_state

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
    # what the line claims, checked below: --resume only with the same settings, other ones need another --out
    assert "--resume continues it only with the same settings" in err[0], err[0]
    assert "other settings (e.g. a lower optim.lr or optim.clip_grad) need a new run with another --out" in err[0]
    tensors, info = load_checkpoint(run / "checkpoint.safetensors")
    assert info["meta"]["epoch"] == 0
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if v.is_floating_point())
    assert not (run / "teacher_backbone.safetensors").exists()

    monkeypatch.undo()
    assert main(["pretrain", "--out", str(run), *TINY, "optim.lr=0.5", "optim.clip_grad=1", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "optim.lr (0.001 -> 0.5)" in err[0] and "optim.clip_grad (3.0 -> 1)" in err[0], err
    assert main(["pretrain", "--out", str(run), *TINY, "optim.lr=0.0005"]) == 2  # nor a fresh start over it
    assert "continue it with --resume, or give another --out" in capsys.readouterr().err
    # speed-only keys may differ; the run then finishes from its checkpoint
    assert main(["pretrain", "--out", str(run), *TINY, "train.log_every=1", "--resume"]) == 0
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"
    w = load_file(run / "teacher_backbone.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values())


def test_nan_loss_before_any_checkpoint_says_to_rerun_with_other_settings(tmp_path, monkeypatch, capsys):
    """No checkpoint yet (NaN in epoch 0): the line's advice holds, the same --out takes other settings."""
    from gensis.ssl.methods.dino import DINO

    original = DINO.loss

    def poisoned(self, s_out, t_out, step):
        loss, parts = original(self, s_out, t_out, step)
        return (loss * float("nan") if self.poison else loss), parts

    monkeypatch.setattr(DINO, "loss", poisoned)
    monkeypatch.setattr(DINO, "poison", True, raising=False)
    run = tmp_path / "run"
    assert main(["pretrain", "--out", str(run), *TINY, "optim.epochs=1", "optim.clip_grad=null"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epoch 0, step 0" in err[0], err
    assert err[0].endswith("(no checkpoint was written yet; rerun with other settings, e.g. a lower optim.lr or a "
                           "value for optim.clip_grad, now off; the same --out may be reused)"), err[0]
    monkeypatch.setattr(DINO, "poison", False, raising=False)
    assert main(["pretrain", "--out", str(run), *TINY, "optim.epochs=1", "optim.lr=0.0005", "--quiet"]) == 0
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"


@pytest.mark.parametrize("method", ["dino", "ibot", "dinov2"])  # centers: in place, re-assigned, lazy
@pytest.mark.parametrize("device", DEVICES)
def test_deferred_check_applies_no_update_of_the_bad_step(device, method, tmp_path, monkeypatch, capsys):
    """The device path (``GENSIS_FINITE_CHECK=deferred``, the default on CUDA): the NaN of step 5 is only read
    at the end of epoch 1 (step 7), yet student, teacher, AdamW moments and step counts and the method's
    centers are bit for bit as step 4 left them, and the epoch-0 checkpoint is byte for byte the same."""
    from gensis.ssl.train import PretrainTask

    original = PretrainTask.step

    def poisoned(self, model, batch, it, epoch):  # after the method's loss has updated its centers
        loss, parts = original(self, model, batch, it, epoch)
        return (loss * float("nan") if it == 5 else loss), parts

    monkeypatch.setattr(PretrainTask, "step", poisoned)
    monkeypatch.setenv("GENSIS_FINITE_CHECK", "deferred" if device == "cpu" else "auto")
    run = tmp_path / "run"
    box = capture_before_step(monkeypatch, PretrainTask, 5, run / "checkpoint.safetensors")
    assert main(["pretrain", "--out", str(run), *TINY, "--method", method, f"train.device={device}",
                 "train.log_every=10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "epoch 1, step 5" in err[0] and "skipped" in err[0] and "(epoch 0) is untouched" in err[0], err[0]
    assert box["its"] == list(range(8))  # steps 6 and 7 ran after the bad one: the flag was read at step 7
    assert box["task"].optimizer.defaults["fused"]
    state = task_state(box["task"])
    assert any(k.startswith("task.method.") for k in state), "no center compared"
    assert_same_state(box["before"], state)
    assert (run / "checkpoint.safetensors").read_bytes() == box["checkpoint"]


def test_unknown_finite_check_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GENSIS_FINITE_CHECK", "sometimes")
    assert main(["pretrain", "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["gensis: error: GENSIS_FINITE_CHECK=sometimes: must be one of auto, every_step, deferred"]
    assert not (tmp_path / "run").exists()


def test_divergence_knobs_name_only_the_stage_s_own_keys():
    from gensis.train.next_step import divergence_knobs

    assert divergence_knobs({"optim": {"lr": 1e-3}}) == "a lower optim.lr"  # eldm train-ae: no clipping key
    assert divergence_knobs({"optim": {"lr": 1e-3, "clip_grad": 3.0}}) == "a lower optim.lr or optim.clip_grad"
    assert divergence_knobs({"optim": {"lr": 1e-3, "clip_grad": None}}).endswith("optim.clip_grad, now off")


def test_resume_of_an_out_without_a_run_warns_once_then_starts_and_a_real_resume_does_not(tmp_path, capsys):
    one = [*TINY, "optim.epochs=1"]
    for out in (tmp_path / "typo", tmp_path / "empty"):  # a mistyped path, an empty folder
        if out.name == "empty":
            out.mkdir()
        assert main(["pretrain", "--out", str(out), *one, "--resume"]) == 0
        err = capsys.readouterr().err
        warned = [line for line in err.splitlines() if "holds no run to resume" in line]
        assert warned == [f"gensis: warning: --resume: {out} holds no run to resume: a new run starts there"], err
        assert json.loads((out / "manifest.json").read_text())["status"] == "done"
    run = tmp_path / "empty"
    assert main(["pretrain", "--out", str(run), *one, "--resume"]) == 0  # a real run: its checkpoint is read
    err = capsys.readouterr().err
    assert "no run to resume" not in err and "warning" not in err, err
