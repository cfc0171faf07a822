"""Block-wise masks for masked image modelling (iBOT, DINOv2), following BEiT's masking generator.

Notation
    (h, w)        grid            patch grid of a global crop, N = h·w tokens
    r             mask ratio      fraction of the N tokens to mask in one image
    [r_lo, r_hi]  mask_ratio_tuple (DINOv2 ``ibot.mask_ratio_min_max``, default (0.1, 0.5))
    p             mask_probability (DINOv2 ``ibot.mask_sample_probability``, default 0.5)

Block masking (``MaskingGenerator``): until the target count is reached (or a try adds nothing), draw a block of
area U(min_num_patches, remaining) (capped by ``max_num_patches``) and aspect ratio log-uniform in
[min_aspect, 1/min_aspect]; place it uniformly; keep it if it adds at most the remaining count.
Reference: ``MaskingGenerator`` in facebookresearch/dinov2 ``dinov2/data/masking.py``; iBOT's
``ImageFolderMask.__getitem__`` (bytedance/ibot ``loader.py``) is the same loop with a float target, no cap and
min_num_patches = (min(h, w) // 3)².

DINOv2 batch masks (``collate_masks``, from ``collate_data_and_cast`` in ``dinov2/data/collate.py``): of the
B = n_global·batch global crops, n_m = int(B·p) are masked, crop i with ratio U(probs[i], probs[i+1]) where
probs = linspace(r_lo, r_hi, n_m + 1) (the ratios are stratified over the range), the rest unmasked; the list
is shuffled. Also returns the flat indices of the masked tokens, their weights 1/(masked tokens of their image)
and the upper bound Σ int(N·probs[i+1]).

iBOT per-image ratio (``ibot_pred_ratio``): ``pred_ratio`` r or a list [r_1, ...] with variances v: draw
U(r_j − v_j, r_j + v_j) for each j, then choose one uniformly (ViT-S/16 recipe: r = [0, 0.3], v = [0, 0.2], so
half the crops are unmasked and the others mask U(0.1, 0.5)); 0 before ``pred_start_epoch``.
Reference: ``ImageFolderMask.get_pred_ratio`` in bytedance/ibot ``loader.py``.

All draws come from a ``random.Random`` (default: the module's global generator, as the originals), so a
seeded generator reproduces the originals' masks exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


class MaskingGenerator:
    def __init__(self, input_size: int | tuple[int, int], min_num_patches: float = 4,
                 max_num_patches: float | None = None, min_aspect: float = 0.3, max_aspect: float | None = None):
        self.height, self.width = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        self.num_patches = self.height * self.width
        self.min_num_patches = min_num_patches
        self.max_num_patches = max_num_patches  # None: no cap on one block
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

    def _add_block(self, mask: np.ndarray, max_mask_patches: float, rng: random.Random) -> int:
        delta = 0
        for _ in range(10):
            target_area = rng.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(rng.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = rng.randint(0, self.height - h)
                left = rng.randint(0, self.width - w)
                num_masked = mask[top: top + h, left: left + w].sum()
                if 0 < h * w - num_masked <= max_mask_patches:  # adds something, not more than allowed
                    block = mask[top: top + h, left: left + w]
                    delta += int((~block).sum())
                    block[...] = True
            if delta > 0:
                break
        return delta

    def __call__(self, num_masking_patches: float = 0, rng: random.Random | None = None) -> np.ndarray:
        """(h, w) bool mask with about ``num_masking_patches`` (at most ⌈·⌉) masked tokens."""
        rng = random if rng is None else rng  # the global generator by default, as the originals
        mask = np.zeros((self.height, self.width), dtype=bool)
        count = 0
        while count < num_masking_patches:
            max_mask_patches = num_masking_patches - count
            if self.max_num_patches is not None:
                max_mask_patches = min(max_mask_patches, self.max_num_patches)
            delta = self._add_block(mask, max_mask_patches, rng)
            if delta == 0:
                break
            count += delta
        return mask


@dataclass
class BatchMasks:
    masks: torch.Tensor  # (B, N) bool, B = n_global · batch crops, crop-major as the global crops
    mask_indices: torch.Tensor  # (n,) flat indices of the masked tokens in masks.flatten()
    masks_weight: torch.Tensor  # (n,) 1 / (number of masked tokens of the token's image)
    upperbound: int  # Σ int(N · probs[i+1]) ≥ n: DINOv2's buffer size

    @property
    def n_masked(self) -> int:
        return int(self.mask_indices.numel())


def collate_masks(n_images: int, generator: MaskingGenerator, mask_ratio_tuple: Sequence[float] = (0.1, 0.5),
                  mask_probability: float = 0.5, rng: random.Random | None = None) -> BatchMasks:
    """DINOv2's masks for ``n_images`` global crops (the masking part of ``collate_data_and_cast``)."""
    rng = random if rng is None else rng
    n_tokens = generator.num_patches
    n_masked_images = int(n_images * mask_probability)
    probs = torch.linspace(*mask_ratio_tuple, n_masked_images + 1)  # float32, as the original
    upperbound = 0
    masks_list = []
    for i in range(n_masked_images):
        lo, hi = probs[i], probs[i + 1]
        masks_list.append(torch.from_numpy(generator(int(n_tokens * rng.uniform(lo, hi)), rng)))
        upperbound += int(n_tokens * hi)
    masks_list += [torch.from_numpy(generator(0, rng)) for _ in range(n_masked_images, n_images)]
    rng.shuffle(masks_list)
    masks = torch.stack(masks_list).flatten(1)  # (B, h, w) -> (B, N)
    mask_indices = masks.flatten().nonzero().flatten()  # (n,)
    masks_weight = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]  # (n,)
    return BatchMasks(masks, mask_indices, masks_weight, upperbound)


def ibot_pred_ratio(pred_ratio: float | Sequence[float], pred_ratio_var: float | Sequence[float] = 0.0,
                    epoch: int | None = None, pred_start_epoch: int = 0, rng: random.Random | None = None) -> float:
    """iBOT's mask ratio of one crop (``ImageFolderMask.get_pred_ratio``)."""
    rng = random if rng is None else rng
    if epoch is not None and epoch < pred_start_epoch:
        return 0.0
    if isinstance(pred_ratio, (list, tuple)) and len(pred_ratio) == 1:
        pred_ratio = pred_ratio[0]
    if isinstance(pred_ratio_var, (list, tuple)) and len(pred_ratio_var) == 1:
        pred_ratio_var = pred_ratio_var[0]
    if isinstance(pred_ratio, (list, tuple)):
        variances = pred_ratio_var if isinstance(pred_ratio_var, (list, tuple)) else [pred_ratio_var] * len(pred_ratio)
        ratios = []
        for prm, prv in zip(pred_ratio, variances):
            if prm < prv:
                raise ValueError(f"pred_ratio {prm} < pred_ratio_var {prv}")
            ratios.append(rng.uniform(prm - prv, prm + prv) if prv > 0 else prm)
        return rng.choice(ratios)
    if pred_ratio < pred_ratio_var:
        raise ValueError(f"pred_ratio {pred_ratio} < pred_ratio_var {pred_ratio_var}")
    return rng.uniform(pred_ratio - pred_ratio_var, pred_ratio + pred_ratio_var) if pred_ratio_var > 0 else pred_ratio


def ibot_generator(grid: tuple[int, int], min_aspect: float = 0.3) -> MaskingGenerator:
    """iBOT's block masking on an (h, w) grid: min block area (min(h, w) // 3)², no cap per block."""
    h, w = grid
    return MaskingGenerator((h, w), min_num_patches=(min(h, w) // 3) ** 2, max_num_patches=None,
                            min_aspect=min_aspect, max_aspect=1 / min_aspect)


def ibot_masks(n_images: int, grid: tuple[int, int], pred_ratio: float | Sequence[float] = (0.0, 0.3),
               pred_ratio_var: float | Sequence[float] = (0.0, 0.2), epoch: int | None = None,
               pred_start_epoch: int = 0, rng: random.Random | None = None) -> torch.Tensor:
    """(n_images, h, w) bool masks, one ratio per image, block-wise as iBOT's ``ImageFolderMask``."""
    gen = ibot_generator(grid)
    n = grid[0] * grid[1]
    out = [gen(ibot_pred_ratio(pred_ratio, pred_ratio_var, epoch, pred_start_epoch, rng) * n, rng)
           for _ in range(n_images)]
    return torch.from_numpy(np.stack(out))  # (n_images, h, w)
