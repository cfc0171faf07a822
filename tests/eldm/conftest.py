"""Shared pieces of the E-LDM tests: a tiny random encoder run, a tiny untrained generator, CLI runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gensis.config import dump, load_config

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny ops: OpenMP spinning on a shared 2-core box costs more than it saves


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    """120 labelled 16×16 images: a bright square whose position depends on the class (4 classes)."""
    rng = np.random.default_rng(0)
    n, s = 120, 16
    labels = np.arange(n) % 4
    images = rng.integers(0, 40, (n, s, s), dtype=np.uint8)
    for i, c in enumerate(labels):
        y, x = divmod(int(c), 2)
        images[i, y * 8 + 1:y * 8 + 7, x * 8 + 1:x * 8 + 7] = 220
    path = tmp_path_factory.mktemp("eldm-data") / "tiny.npz"
    np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture(scope="session")
def encoder_run(tmp_path_factory) -> Path:
    """A pretraining-run folder holding a randomly initialised tiny ViT (what load_encoder needs)."""
    from gensis.models.backbone import build_backbone
    from gensis.rundir import atomic_write_json, save_tensors

    cfg = load_config("pretrain", "smoke", ["data.image_size=16", "model.patch_size=4", "model.embed_dim=32",
                                            "model.depth=1", "model.num_heads=2"])
    torch.manual_seed(0)
    model = build_backbone({**cfg["model"], "drop_path_rate": 0.0}, 16)
    run = tmp_path_factory.mktemp("enc")
    (run / "config.yaml").write_text(dump(cfg))
    save_tensors(run / "teacher_backbone.safetensors", model.state_dict())
    atomic_write_json(run / "manifest.json", {"stage": "pretrain", "status": "done"})
    return run


TINY = ["data.image_size=16", "data.limit=null", "optim.batch_size=16", "optim.epochs=2", "train.threads=1",
        "unet.block_out_channels=[8,16]", "unet.attention=[false,true]", "unet.norm_num_groups=4",
        "unet.context_dim=16", "unet.attention_head_dim=4", "sample.steps=3", "sample.dpmpp_steps=3",
        "eval.n=12", "eval.batch_size=12", "eval.knn_k=3", "figures.rows=2", "figures.per_image=2",
        "figures.pairs=2", "ae.val_images=16"]


@pytest.fixture(scope="session")
def tiny_overrides() -> list[str]:
    return list(TINY)


def run_cli(*argv: str) -> int:
    from gensis.cli.main import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="session")
def cli():
    return run_cli


@pytest.fixture(scope="session")
def trained_pixel_run(tmp_path_factory, encoder_run, tiny_npz) -> Path:
    """A finished 2-epoch pixel-space run (the smoke preset + tiny overrides)."""
    out = tmp_path_factory.mktemp("eldm") / "run"
    assert run_cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", out, "--preset", "smoke",
                   "--quiet", *TINY) == 0
    return out


def tiny_generator(mode: str = "both", space: str = "pixel", prediction: str = "epsilon", seed: int = 0,
                   tokens: int = 1):
    """An untrained ELDMGenerator with a random tiny UNet (no encoder): for sampler/determinism tests."""
    from gensis.eldm.autoencoder import PixelSpace
    from gensis.eldm.ddim_sampler import SamplerSettings
    from gensis.eldm.denoiser import Denoiser
    from gensis.eldm.model import ELDMGenerator
    from gensis.eldm.schedule import NoiseSchedule

    torch.manual_seed(seed)
    u = {"block_out_channels": [8, 16], "layers_per_block": 1, "attention": [False, True], "mid_attention": False,
         "attention_head_dim": 4, "norm_num_groups": 4}
    den = Denoiser(12, 3, 8, u, 16, mode, tokens)
    if den.to_time is not None:  # give the time path non-zero weights so the condition matters
        torch.nn.init.normal_(den.to_time.weight, std=0.5)
    sched = NoiseSchedule.create(1000, "linear", 1e-4, 0.02, prediction)
    return ELDMGenerator(den, PixelSpace(), sched, None, 8, (3, 8, 8), SamplerSettings("ddim", 4, 3.0, 0.0, "leading", 1.0),
                         "test")


@pytest.fixture(scope="session")
def make_generator():
    """make_generator(mode="both", prediction="epsilon", seed=0, tokens=1) -> an untrained tiny ELDMGenerator."""
    return tiny_generator
