"""DINOv2 image-level DINO loss (Oquab et al., 2023, Sec. 4 "Image-level objective").

Notation (paper → code)
    p_t = target(g_θt(x))   teacher_targets     (n_global, B, K): softmax-centered or Sinkhorn-Knopp teacher
                                                 probabilities (see ``centering.py``), per global crop
    g_θs(x')                student_out          raw student head outputs, (B, K) per crop
    τ_s                     student_temp

Steps
    1. teacher targets from the teacher's global-crop CLS outputs (``teacher_targets``; a softmax center is
       updated with this batch, applied lazily at the next call as in dinov2)
    2. L_DINO = −Σ_{s ∈ students} Σ_{t ∈ targets} mean_batch Σ_k p_t,k · log softmax(g_θs/τ_s)_k   (``forward``)
    3. multi-crop weighting of ``dinov2/train/ssl_meta_arch.py`` (``multicrop_terms``): with n_g = 2 global and
       n_l local crops, n_terms = n_g(n_g − 1) + n_g·n_l,
           local  = L_DINO(local crops vs both global targets) / n_terms
           global = 2 · L_DINO([both global crops], [targets of the *other* global crop]) / n_terms
       where the global term pairs student crop A with the teacher's crop B and vice versa (the original swaps
       the teacher's two chunks before the head) and is computed as one mean over 2B rows, hence the factor 2.

Reference: ``DINOLoss`` in facebookresearch/dinov2 ``dinov2/loss/dino_clstoken_loss.py`` and its call in
``SSLMetaArch.forward_backward``; tests compare with outputs of that code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gensis.ssl.losses.centering import EMACenter, check_centering, sinkhorn_knopp


class DINOv2DINOLoss(nn.Module):
    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "centering", sinkhorn_iterations: int = 3):
        super().__init__()
        self.student_temp = student_temp
        self.centering = check_centering(centering)
        self.sinkhorn_iterations = sinkhorn_iterations
        self.center = EMACenter((1, out_dim), center_momentum, lazy=True)

    @torch.no_grad()
    def teacher_targets(self, teacher_out: torch.Tensor, teacher_temp: float, update_center: bool = True) -> torch.Tensor:
        """Step 1: (N, K) raw teacher outputs -> (N, K) target probabilities (rows sum to 1)."""
        teacher_out = teacher_out.detach().float()
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_out, teacher_temp, self.sinkhorn_iterations)
        probs = self.center.softmax(teacher_out, teacher_temp)
        if update_center:
            self.center.update(teacher_out.sum(dim=0, keepdim=True), len(teacher_out))  # (1, K)
        return probs

    def forward(self, student_outs: Sequence[torch.Tensor], teacher_targets: Sequence[torch.Tensor]) -> torch.Tensor:
        """Step 2: every student (B, K) against every target (B, K); a sum of batch-mean cross-entropies."""
        total = torch.zeros((), device=student_outs[0].device)
        for s in student_outs:
            log_p = F.log_softmax(s.float() / self.student_temp, dim=-1)  # (B, K)
            for t in teacher_targets:
                total = total - torch.sum(t * log_p, dim=-1).mean()
        return total

    def multicrop_terms(self, student_global: torch.Tensor, student_local: torch.Tensor | None,
                        targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Step 3. student_global (2B, K) crop-major; student_local (n_l·B, K) or None; targets (2, B, K) in the
        natural crop order. Returns {"global": ..., "local": ...} ("local" is 0 without local crops)."""
        n_global = targets.shape[0]
        if n_global != 2:
            raise ValueError(f"DINOv2's loss pairs exactly 2 global crops, got {n_global}")
        n_local = 0 if student_local is None else student_local.shape[0] // targets.shape[1]
        n_terms = (n_global - 1) * n_global + max(n_local * n_global, 1)
        local = student_global.new_zeros((), dtype=torch.float32)
        if n_local > 0:
            local = self(list(student_local.chunk(n_local)), list(targets)) / n_terms  # n_l × (B, K) vs 2 × (B, K)
        swapped = torch.cat((targets[1], targets[0]))  # (2B, K): crop A's student row faces teacher crop B
        glob = self([student_global], [swapped]) * 2 / n_terms
        return {"global": glob, "local": local}
