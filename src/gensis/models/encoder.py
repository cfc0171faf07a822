"""Frozen encoders for evaluation and conditioning: "image batch → CLS embedding".

``load_encoder(spec)`` accepts a pretraining run directory (its ``teacher_backbone.safetensors``, DINO's
choice for evaluation, rebuilt from the run's ``config.yaml``), or the two baselines ``pixels`` (flattened
raw pixels) and ``random`` (a randomly initialised backbone of the demo preset's architecture).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gensis.data.batch_augment import normalize
from gensis.errors import UserError
from gensis.models.backbone import build_backbone, embed_dim
from gensis.rundir import RunDir, file_hash, load_tensors


@dataclass
class Encoder:
    """A frozen image → feature function with what is needed to feed it."""

    model: nn.Module | None  # None for raw pixels
    image_size: int
    name: str
    identity: str  # hash of the weights (or the baseline's name)

    @property
    def dim(self) -> int:
        return 3 * self.image_size**2 if self.model is None else embed_dim(self.model)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → float (B, D) on the model's device. Images are resized to ``image_size``."""
        from torchvision.transforms.v2 import functional as TF

        x = images
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = TF.resize(x, [self.image_size, self.image_size], antialias=True)
        if self.model is None:
            return x.float().div(255).flatten(1)
        dev = next(self.model.parameters()).device
        x = normalize(x.to(dev).float().div(255))
        return self.model(x).float()

    def to(self, device) -> "Encoder":
        if self.model is not None:
            self.model.to(device)
        return self


def load_encoder(spec: str, which: str = "teacher", image_size: int | None = None, seed: int = 0,
                 like: str | None = None) -> Encoder:
    """``spec``: a pretraining RUN directory, ``pixels`` or ``random``.

    ``random`` builds the demo preset's architecture, or that of the run ``like`` when given, so the
    random-init baseline has exactly the architecture of the model it is compared with.
    """
    if spec == "pixels":
        return Encoder(None, image_size or 28, "pixels", "pixels")
    if spec == "random":
        from gensis.config import load_config

        cfg = RunDir(like).config() if like else load_config("pretrain", "demo")
        torch.manual_seed(seed)
        size = image_size or cfg["data"]["image_size"]
        model = build_backbone({**cfg["model"], "drop_path_rate": 0.0}, size).eval()
        return Encoder(model, size, "random", f"random-seed{seed}")
    run = RunDir(spec)
    if not Path(spec).is_dir():
        raise UserError(f"encoder '{spec}' is not a run directory (or 'pixels' / 'random')")
    weights = run / f"{which}_backbone.safetensors"
    if not weights.is_file():
        raise UserError(f"{spec} has no {weights.name}: is the pretraining run finished?")
    cfg = run.config()
    size = cfg["data"]["image_size"]
    model = build_backbone({**cfg["model"], "drop_path_rate": 0.0}, size)
    model.load_state_dict(load_tensors(weights))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Encoder(model, size, str(spec), file_hash(weights))


@torch.no_grad()
def extract_features(encoder: Encoder, ds, batch_size: int = 256, device: str | torch.device = "cpu",
                     desc: str = "features") -> np.ndarray:
    """(N, D) float32 features of every image of an ImageSet, in order."""
    from gensis.data.loader import ImageBatches
    from gensis.progress import progress

    encoder.to(device)
    batches = ImageBatches(ds, batch_size, shuffle=False, drop_last=False,
                           load_size=None if _same_size(ds) else encoder.image_size)
    out = []
    for images, _ in progress(batches.epoch(0), total=len(batches), desc=desc, leave=False):
        out.append(encoder(images).cpu())
    return torch.cat(out).numpy().astype(np.float32)


def _same_size(ds) -> bool:
    from gensis.data.loader import _is_array_backed

    return _is_array_backed(ds)
