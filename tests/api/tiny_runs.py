"""Tiny run folders made without training (random weights, written by gensis' own writers), for the API,
export and docs tests: a pretraining run, an E-LDM run (pixel or VQ space) and a bank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gensis.config import dump, load_config

ENCODER = ["data.image_size=16", "model.patch_size=4", "model.embed_dim=32", "model.depth=2", "model.num_heads=2"]
ELDM = ["data.image_size=16", "unet.block_out_channels=[8,16]", "unet.attention=[false,true]",
        "unet.norm_num_groups=4", "unet.context_dim=16", "unet.attention_head_dim=4", "sample.steps=3",
        "sample.guidance=2.0", "cond.mode=both", "ae.model.block_out_channels=[8,8]", "ae.model.norm_num_groups=4",
        "ae.model.num_vq_embeddings=16"]


def make_images(path: Path, n: int = 48, size: int = 16, seed: int = 0) -> Path:
    """An .npz of n labelled RGB images: a bright square whose corner depends on the class (4 classes)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    images = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    h = size // 2
    for i, c in enumerate(labels):
        y, x = divmod(int(c), 2)
        images[i, y * h + 1:y * h + h - 1, x * h + 1:x * h + h - 1] = (220, 120 + 30 * c, 60)
    np.savez(path, images=images, labels=labels)
    return path


def make_encoder_run(run: Path, seed: int = 0, overrides: tuple[str, ...] = ()) -> Path:
    """A finished-looking pretraining run holding a randomly initialised tiny ViT (patch 4, 16 px, depth 2)."""
    from gensis.models.backbone import build_backbone
    from gensis.rundir import atomic_write_json, save_tensors

    cfg = load_config("pretrain", "smoke", [*ENCODER, *overrides])
    torch.manual_seed(seed)
    run.mkdir(parents=True, exist_ok=True)
    for which in ("teacher", "student"):
        model = build_backbone({**cfg["model"], "drop_path_rate": 0.0}, 16)
        save_tensors(run / f"{which}_backbone.safetensors", model.state_dict())
    (run / "config.yaml").write_text(dump(cfg))
    atomic_write_json(run / "manifest.json", {"stage": "pretrain", "status": "done"})
    return run


def make_eldm_run(run: Path, encoder_run: Path, space: str = "vq", seed: int = 0, mode: str = "both",
                  tokens: int = 1) -> Path:
    """A finished-looking E-LDM run with random weights (written by ``gensis.eldm.train.export``)."""
    from gensis.eldm.autoencoder import PixelSpace, VQAutoencoder, build_vq, load_autoencoder, save_autoencoder
    from gensis.eldm.train import build_denoiser, export
    from gensis.models.encoder import load_encoder
    from gensis.rundir import RunDir, atomic_write_json

    cfg = load_config("eldm", "smoke", [*ELDM, f"space={space}", f"cond.mode={mode}", f"cond.tokens={tokens}"])
    torch.manual_seed(seed)
    run.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder(str(encoder_run))
    ae_path = None
    if space == "vq":
        ae_path = run.parent / f"{run.name}-ae"
        vq = build_vq(cfg["ae"]["model"], 16)
        save_autoencoder(ae_path, VQAutoencoder(vq, scale=0.7), cfg["ae"]["model"], 16)
        ae = load_autoencoder(ae_path)
    else:
        ae = PixelSpace(1)
    latent = 16 // ae.factor
    den = build_denoiser(cfg, encoder.dim, ae.channels, latent)
    if den.to_time is not None:  # non-zero weights so that the condition visibly matters
        torch.nn.init.normal_(den.to_time.weight, std=0.5)
    torch.nn.init.normal_(den.unet.conv_out.weight, std=0.05)
    (run / "config.yaml").write_text(dump(cfg))
    export(RunDir(run), cfg, den, str(encoder_run), encoder, ae, None if ae_path is None else str(ae_path), latent)
    atomic_write_json(run / "manifest.json", {"stage": "eldm", "status": "done"})
    return run

