"""Multi-positive contrastive loss (StableRep, Tian et al., NeurIPS 2023, Eq. 2); with two views of each image it
is SimCLR's NT-Xent / InfoNCE (Chen et al., 2020, Eq. 1).

Notation (paper → code)
    z_a          feats (M, D)       features of this rank's views, view-major: [view 0 of images 0..B−1, view 1, ...]
    y_a          labels (M,)        image id of each row (unique over ranks: ``image_labels``)
    A            all_feats          features of every rank (all-gathered *with* gradient), (world·M, D)
    τ            temperature
    sim          cosine similarity (features L2-normalised)

For every local anchor a (self excluded from both numerator and denominator):
    p_ab = 1[y_a = y_b, b ≠ a] / max(Σ_{b≠a} 1[y_a = y_b], 1)                ground-truth distribution
    q_ab = exp(sim(z_a, A_b)/τ) / Σ_{b' ≠ a} exp(sim(z_a, A_b')/τ)
    L    = mean_a −Σ_b p_ab log q_ab
With 2 views, p puts all mass on the other view: L = mean over the 2B anchors of −log q_{a, other view(a)}.
The logits are shifted by their row max (detached) before the softmax, as the original.

Under DDP every rank computes the loss of its own anchors against the negatives of all ranks; the gather
passes gradients back to the rank that owns each feature (``gather.all_gather_with_grad``).

Reference: ``MultiPosConLoss`` in google-research/syn-rep-learn ``StableRep/models/losses.py`` (labels and view
order as ``StableRep/models/StableRep.py``); tests compare with outputs of that code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gensis.ssl.losses.gather import all_gather_no_grad, all_gather_with_grad, world_size_and_rank


def image_labels(batch_size: int, n_views: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(n_views·B,) view-major labels: image i of this rank has id rank·B + i (equal local batch sizes)."""
    _, rank = world_size_and_rank()
    return (torch.arange(batch_size, device=device) + rank * batch_size).repeat(n_views)


class MultiPosConLoss(nn.Module):
    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature

    def forward(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """feats: (M, D) local rows; labels: (M,) global image ids -> scalar."""
        feats = F.normalize(feats.float(), dim=-1, p=2)  # (M, D)
        m = feats.shape[0]
        all_feats = all_gather_with_grad(feats)  # (world·M, D)
        all_labels = all_gather_no_grad(labels)  # (world·M,)
        _, rank = world_size_and_rank()
        self_idx = torch.arange(m, device=feats.device) + m * rank  # (M,): the anchor's own column
        logits_mask = torch.ones(m, all_feats.shape[0], device=feats.device)  # (M, world·M)
        logits_mask[torch.arange(m, device=feats.device), self_idx] = 0
        mask = torch.eq(labels.view(-1, 1), all_labels.view(1, -1)).float() * logits_mask  # positives
        logits = feats @ all_feats.t() / self.temperature  # (M, world·M)
        logits = logits - (1 - logits_mask) * 1e9
        logits = logits - logits.max(dim=-1, keepdim=True).values.detach()
        p = mask / mask.sum(1, keepdim=True).clamp(min=1.0)
        return -torch.sum(p * F.log_softmax(logits, dim=-1), dim=-1).mean()


class NTXentLoss(nn.Module):
    """SimCLR's NT-Xent on a list of views of the same B images (each (B, D)); StableRep's loss with labels."""

    def __init__(self, temperature: float = 0.1):
        super().__init__()
        self.loss = MultiPosConLoss(temperature)

    def forward(self, views: Sequence[torch.Tensor]) -> torch.Tensor:
        feats = torch.cat(list(views))  # (V·B, D) view-major
        labels = image_labels(views[0].shape[0], len(views), feats.device)
        return self.loss(feats, labels)
