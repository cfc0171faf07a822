"""DINO's multi-crop augmentation (Caron et al., 2021, ``DataAugmentationDINO``), with torchvision v2.

Global view 1: RandomResizedCrop(global_size, global_scale) → flip → color jitter (0.4, 0.4, 0.2, 0.1)
    with p=0.8 → grayscale p=0.2 → Gaussian blur p=1.0
Global view 2: same, blur p=0.1, solarization p=0.2
Local views (n_local): RandomResizedCrop(local_size, local_scale) → flip → jitter → grayscale → blur p=0.5

DINO's blur kernel (23 px at 224 px, σ ∈ [0.1, 2]) is scaled with the crop size so that small images are
blurred by the same fraction of their width; everything runs on uint8 CHW tensors, then is normalized.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import v2

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as DINO
STD = (0.229, 0.224, 0.225)


def _blur(size: int, p: float) -> v2.Transform:
    k = max(3, int(round(23 * size / 224)) | 1)
    sigma = (0.1 * max(size / 224, 0.25), 2.0 * max(size / 224, 0.25))
    return v2.RandomApply([v2.GaussianBlur(k, sigma)], p=p)


def _normalize() -> v2.Transform:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 array → 3×H×W uint8 tensor."""
    arr = np.ascontiguousarray(img)
    if not arr.flags.writeable:  # e.g. np.asarray of a PIL image: torch warns about read-only arrays
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


@dataclass
class MultiCropConfig:
    global_size: int = 224
    local_size: int = 96
    n_local: int = 8
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    jitter: float = 1.0  # strength multiplier of (0.4, 0.4, 0.2, 0.1)
    solarize: float = 0.2

    @classmethod
    def from_cfg(cls, aug: dict, image_size: int) -> "MultiCropConfig":
        return cls(global_size=image_size, local_size=aug["local_size"], n_local=aug["n_local"],
                   global_scale=tuple(aug["global_scale"]), local_scale=tuple(aug["local_scale"]),
                   jitter=aug.get("jitter", 1.0), solarize=aug.get("solarize", 0.2))


def _base(size: int, scale: tuple[float, float], jitter: float) -> list[v2.Transform]:
    j = jitter
    return [
        v2.RandomResizedCrop(size, scale=scale, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4 * j, 0.4 * j, 0.2 * j, 0.1 * j)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]


class DINOAugmentation:
    """Callable: uint8 tensor (3, H, W) → list of 2 + n_local float crops (globals first)."""

    def __init__(self, cfg: MultiCropConfig):
        self.cfg = cfg
        g, l = cfg.global_size, cfg.local_size
        self.global1 = v2.Compose(_base(g, cfg.global_scale, cfg.jitter) + [_blur(g, 1.0), _normalize()])
        self.global2 = v2.Compose(_base(g, cfg.global_scale, cfg.jitter)
                                  + [_blur(g, 0.1), v2.RandomSolarize(128, p=cfg.solarize), _normalize()])
        self.local = v2.Compose(_base(l, cfg.local_scale, cfg.jitter) + [_blur(l, 0.5), _normalize()])

    def global_view(self, img: torch.Tensor, which: int) -> torch.Tensor:
        return (self.global1 if which == 0 else self.global2)(img)

    def __call__(self, img: torch.Tensor) -> list[torch.Tensor]:
        return [self.global1(img), self.global2(img)] + [self.local(img) for _ in range(self.cfg.n_local)]


def eval_transform(size: int) -> v2.Transform:
    """Resize to ``size`` (the backbone's global crop size) and normalize; for feature extraction."""
    return v2.Compose([v2.Resize(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                       v2.CenterCrop(size), _normalize()])


def linear_train_transform(size: int) -> v2.Transform:
    """DINO linear protocol, train side: RandomResizedCrop + flip."""
    return v2.Compose([v2.RandomResizedCrop(size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                       v2.RandomHorizontalFlip(), _normalize()])
