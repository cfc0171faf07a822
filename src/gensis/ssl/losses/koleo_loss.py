"""KoLeo regulariser: Kozachenko-Leonenko differential-entropy estimate (Sablayrolles et al., 2019, Eq. 8;
used by DINOv2, Oquab et al., 2023, Sec. 4 "KoLeo regularizer").

Notation (paper → code)
    x_i         x                    (B, D) features (DINOv2: student CLS tokens of one global crop)
    ρ_{n,i}     distances            min_{j ≠ i} ‖x̂_i − x̂_j‖ with x̂ = x / ‖x‖ (nearest neighbour on the sphere)

    L_KoLeo = −(1/B) Σ_i log(ρ_{n,i} + ε)

The nearest neighbour is found by the largest inner product (the diagonal set to −1), the distance is
``pairwise_distance(x̂_i, x̂_nn(i), eps=1e-8)`` = ‖x̂_i − x̂_nn(i) + ε‖; all in float32 without autocast.
DINOv2 adds ``koleo_loss_weight · Σ_{c ∈ global crops} L_KoLeo(student CLS of crop c)`` (``ssl_meta_arch.py``),
so that the two crops of one image are never each other's neighbour.

Reference: ``KoLeoLoss`` in facebookresearch/dinov2 ``dinov2/loss/koleo_loss.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def nearest_neighbor_index(x_normalized: torch.Tensor) -> torch.Tensor:
    """(B, D) L2-normalised rows -> (B,) index of each row's nearest other row (max inner product)."""
    dots = x_normalized @ x_normalized.t()  # (B, B)
    n = x_normalized.shape[0]
    dots.view(-1)[:: n + 1].fill_(-1)  # the diagonal: a row is not its own neighbour
    return dots.argmax(dim=1)


class KoLeoLoss(nn.Module):
    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D), B ≥ 2 -> scalar."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), eps=self.eps, p=2, dim=-1)  # (B, D)
            with torch.no_grad():
                nn_idx = nearest_neighbor_index(x)
            distances = F.pairwise_distance(x, x[nn_idx], p=2, eps=self.eps)  # (B,)
            return -torch.log(distances + self.eps).mean()


def koleo_over_crops(koleo: KoLeoLoss, cls_tokens: torch.Tensor) -> torch.Tensor:
    """DINOv2's use: (n_crops, B, D) student CLS → Σ_c KoLeo(cls_tokens[c]), each crop's batch on its own, so
    that the crops of one image are never each other's neighbour (``ssl_meta_arch.py``)."""
    return sum((koleo(x) for x in cls_tokens), torch.zeros((), device=cls_tokens.device))
