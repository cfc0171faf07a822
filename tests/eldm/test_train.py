"""`gensis eldm train-ae / train / sample / eval` end to end on tiny models, and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train_state import assert_same_state, capture_before_step, task_state

from gensis.checkpoint import load_checkpoint, sub_state
from gensis.rundir import load_tensors


def test_train_writes_a_complete_run(trained_pixel_run):
    run = trained_pixel_run
    for name in ("config.yaml", "manifest.json", "metrics.jsonl", "checkpoint.safetensors", "denoiser_ema.safetensors",
                 "eldm.json", "encoder/teacher_backbone.safetensors", "encoder/config.yaml"):
        assert (run / name).is_file(), name
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "done" and m["stage"] == "eldm"
    assert m["inputs"]["encoder_identity"] and m["inputs"]["data_identity"]
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("loss" in r and "lr" in r for r in rows)
    assert list((run / "cache").glob("embeddings-*.safetensors"))


def test_embeddings_cache_is_keyed_by_the_encoder(trained_pixel_run, encoder_run, tiny_npz):
    from safetensors import safe_open

    from gensis.models.encoder import load_encoder

    path = trained_pixel_run / "cache" / "embeddings-train.safetensors"
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["encoder"] == load_encoder(str(encoder_run)).identity


def test_load_generator_and_protocol(trained_pixel_run, tiny_npz):
    import numpy as np

    from gensis.eldm import EmbeddingConditionedGenerator, load_generator

    g = load_generator(trained_pixel_run, guidance=2.0, steps=3)
    assert isinstance(g, EmbeddingConditionedGenerator) and g.image_size == 16
    images = torch.from_numpy(np.load(tiny_npz)["images"][:3]).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    e = g.encode(images)
    assert e.shape == (3, 32)
    out = g.generate(e, [1, 2, 3])
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(g.generate(e[1:2], [2]), out[1:2])
    assert torch.equal(g.interpolate(e[:1], e[1:2], 1.0, seeds=[5]), g.generate(e[:1], [5]))
    assert g.identity != load_generator(trained_pixel_run, guidance=3.0, steps=3).identity
    assert g.generate(e, [1, 2, 3], sampler="dpmpp").shape == (3, 3, 16, 16)


def test_sample_and_eval_cli(trained_pixel_run, tiny_npz, tmp_path, cli, capsys):
    assert cli("eldm", "sample", "--eldm", trained_pixel_run, "--data", tiny_npz, "--out", tmp_path / "fig") == 0
    from PIL import Image

    for name in ("generative.png", "interpolation.png"):
        with Image.open(tmp_path / "fig" / name) as im:
            assert im.width > 16 * 4 * 3 and im.height > 16 * 4
    out = tmp_path / "fid.json"
    assert cli("eldm", "eval", "--eldm", trained_pixel_run, "--data", tiny_npz, "--json", out, "--quiet") == 0
    r = json.loads(out.read_text())
    for k in ("retrieval_top1", "retrieval_top5", "label_agreement", "frechet_distance", "label_knn_real"):
        assert k in r and r[k] >= 0
    assert r["n"] == 12
    assert "source retrieval" in capsys.readouterr().out


def test_vq_autoencoder_then_latent_denoiser(tmp_path, encoder_run, tiny_npz, tiny_overrides, cli):
    ae = tmp_path / "ae"
    assert cli("eldm", "train-ae", "--data", tiny_npz, "--out", ae, "--preset", "smoke", "--quiet", *tiny_overrides,
               "ae.loss.disc_weight=0.1") == 0
    info = json.loads((ae / "autoencoder.json").read_text())
    assert info["val"]["val_mse"] > 0 and info["scale"] > 0
    assert json.loads((ae / "manifest.json").read_text())["val"]["val_psnr"] > 0
    run = tmp_path / "eldm"
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", run, "--ae", ae,
               "--preset", "smoke", "--quiet", *tiny_overrides, "optim.epochs=1") == 0
    from gensis.eldm import load_generator

    g = load_generator(run)
    assert g.latent_shape == (3, 4, 4) and g.autoencoder.space == "vq"
    assert (run / "autoencoder" / "autoencoder.safetensors").is_file()
    assert g.generate(torch.randn(2, 32), [0, 1]).shape == (2, 3, 16, 16)


def test_user_errors_are_one_line(tmp_path, encoder_run, tiny_npz, cli, capsys):
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", tmp_path / "x",
               "--preset", "smoke", "space=vq") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ae" in err[0]
    assert cli("eldm", "train", "--encoder", tmp_path / "nope", "--data", tiny_npz, "--out", tmp_path / "y",
               "--preset", "smoke") == 2
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", tmp_path / "z",
               "--preset", "smoke", "cond.mdoe=time") == 2
    assert "cond.mode" in capsys.readouterr().err
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", tmp_path / "b",
               "--preset", "smoke", "optim.batch_size=500") == 2  # the trainers' shared check (data.loader)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training images, fewer than optim.batch_size=500: set a smaller batch" in err[0]
    assert err[0].endswith("or give more images")
    assert cli("eldm", "sample", "--eldm", tmp_path / "nothing", "--data", tiny_npz, "--out", tmp_path / "f") == 2


def test_resume_of_a_finished_run_refuses_other_settings(trained_pixel_run, encoder_run, tiny_npz, tiny_overrides,
                                                         cli, capsys):
    """`eldm train --resume optim.epochs=4` on a finished run (to train longer) said 'E-LDM training done' and
    trained nothing, whatever the settings or the --encoder; pretrain and train-ae refuse them. Now refused
    alike; the same settings still finish at once, the weights untouched."""
    weights = (trained_pixel_run / "denoiser_ema.safetensors").read_bytes()
    argv = ["eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", trained_pixel_run, "--preset",
            "smoke", "--quiet", "--resume", *tiny_overrides]
    assert cli(*argv, "optim.epochs=4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings or inputs: optim.epochs (2 -> 4)" in err[0], err
    assert cli(*argv) == 0 and "E-LDM training done" in capsys.readouterr().out
    assert (trained_pixel_run / "denoiser_ema.safetensors").read_bytes() == weights


def _train_argv(encoder_run, tiny_npz, out, overrides):
    return [sys.executable, "-m", "gensis.cli.main", "eldm", "train", "--encoder", str(encoder_run), "--data",
            str(tiny_npz), "--out", str(out), "--preset", "smoke", "--quiet", *overrides]


def test_kill_and_resume_matches_uninterrupted(tmp_path, encoder_run, tiny_npz, tiny_overrides, cli):
    """SIGKILL after the first epoch checkpoint, --resume: the same weights as a run never interrupted."""
    over = [*tiny_overrides, "optim.epochs=6", "data.limit=64"]
    ref = tmp_path / "ref"
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", ref, "--preset", "smoke",
               "--quiet", *over) == 0

    run = tmp_path / "killed"
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(_train_argv(encoder_run, tiny_npz, run, over), env=env)
    ckpt = run / "checkpoint.safetensors"
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt.is_file():
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    _, info = load_checkpoint(ckpt)
    assert info["meta"]["epoch"] < 5 and not (run / "denoiser_ema.safetensors").exists()
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", run, "--preset", "smoke",
               "--quiet", "--resume", *over) == 0
    a, b = load_tensors(ref / "denoiser_ema.safetensors"), load_tensors(run / "denoiser_ema.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ta, _ = load_checkpoint(ref / "checkpoint.safetensors")
    tb, _ = load_checkpoint(run / "checkpoint.safetensors")
    da, db = sub_state(ta, "denoiser"), sub_state(tb, "denoiser")
    assert all(torch.equal(da[k], db[k]) for k in da)
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no duplicated rows after the resume


def test_two_processes_with_torchrun(tmp_path, encoder_run, tiny_npz, tiny_overrides):
    """DDP on CPU (gloo): a 2-process run finishes, checkpoints both ranks' RNGs and gives a loadable model."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "gensis.cli.main", "eldm", "train", "--encoder", str(encoder_run), "--data", str(tiny_npz),
           "--out", str(out), "--preset", "smoke", "--quiet", *tiny_overrides, "optim.epochs=1", "data.limit=64"]
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tensors, info = load_checkpoint(out / "checkpoint.safetensors")
    assert info["meta"]["world"] == 2 and "extra.rng.r1.gen.eldm" in tensors and len(info["meta"]["rng"]) == 2
    assert not torch.equal(tensors["extra.rng.r0.gen.eldm"], tensors["extra.rng.r1.gen.eldm"])
    from gensis.eldm import load_generator

    assert load_generator(out).generate(torch.randn(1, 32), [0]).shape == (1, 3, 16, 16)


@pytest.mark.slow
def test_two_processes_on_an_autoencoder_of_another_size_note_it_once(tmp_path, encoder_run, tiny_npz,
                                                                        tiny_overrides, cli):
    """The note that the autoencoder was trained at another size was printed by every process."""
    ae = tmp_path / "ae"
    assert cli("eldm", "train-ae", "--data", tiny_npz, "--out", ae, "--preset", "smoke", "--quiet", *tiny_overrides,
               "ae.optim.epochs=1") == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "gensis.cli.main", "eldm", "train", "--encoder", str(encoder_run), "--data", str(tiny_npz), "--ae", str(ae),
           "--out", str(tmp_path / "eldm"), "--preset", "smoke", "--quiet", *tiny_overrides, "optim.epochs=1",
           "data.limit=64", "data.image_size=24"]
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("[gensis] note: autoencoder trained at 16 px, denoiser data.image_size=24") == 1


@pytest.mark.parametrize("mode", ["every_step", "deferred"])
@pytest.mark.parametrize("trainer", ["train", "train-ae"])
def test_non_finite_loss_stops_with_one_line(trainer, mode, tmp_path, encoder_run, tiny_npz, tiny_overrides, cli,
                                             capsys, monkeypatch):
    """A NaN loss at step 4 (epoch 1) stops training; the epoch-0 checkpoint stays as it was. every_step (the
    CPU default) stops before the optimizer step; deferred (the CUDA default) reads the flag at step 7, and the
    denoiser, its EMA, the autoencoder, its discriminator and their AdamW states are bit for bit as step 3
    left them (the discriminator's NaN loss of step 4 is checked before its own step)."""
    import gensis.eldm.train as eldm_train
    from gensis.eldm.autoencoder import VQAutoencoder
    from gensis.eldm.train_ae import AutoencoderTask

    run = tmp_path / "run"
    task_cls = eldm_train.ELDMTask if trainer == "train" else AutoencoderTask
    box = capture_before_step(monkeypatch, task_cls, 4, run / "checkpoint.safetensors")
    if trainer == "train":
        original = eldm_train.training_step

        def poisoned(*a, **k):
            loss = original(*a, **k)
            return loss * float("nan") if box["its"][-1] == 4 else loss  # 64 images / 16 = 4 steps per epoch

        monkeypatch.setattr(eldm_train, "training_step", poisoned)
        argv = ["eldm", "train", "--encoder", encoder_run]
    else:
        original = VQAutoencoder.forward

        def poisoned(self, x):
            xh, q = original(self, x)
            return (xh * float("nan") if torch.is_grad_enabled() and box["its"][-1] == 4 else xh), q

        monkeypatch.setattr(VQAutoencoder, "forward", poisoned)
        argv = ["eldm", "train-ae", "ae.loss.disc_weight=0.1"]
    monkeypatch.setenv("GENSIS_FINITE_CHECK", mode)
    assert cli(*argv, "--data", tiny_npz, "--out", run, "--preset", "smoke", "--quiet", *tiny_overrides,
               "data.limit=64", "ae.optim.batch_size=16", "ae.optim.epochs=2", "optim.epochs=2",
               "train.log_every=10") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "epoch 1, step 4" in err[0] and "(epoch 0) is untouched" in err[0], err
    tensors, info = load_checkpoint(run / "checkpoint.safetensors")
    assert info["meta"]["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())
    assert (run / "checkpoint.safetensors").read_bytes() == box["checkpoint"]
    if mode == "deferred":
        assert "skipped" in err[0] and box["its"] == list(range(8))
        assert all(o.defaults["fused"] for o in box["task"].state_optimizers().values())
        assert_same_state(box["before"], task_state(box["task"]))
    else:
        assert "before the optimizer step" in err[0] and box["its"] == list(range(5))
