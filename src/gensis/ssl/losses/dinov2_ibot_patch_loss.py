"""DINOv2 patch-level (iBOT) loss on masked tokens (Oquab et al., 2023, Sec. 4 "Patch-level objective").

Notation (paper → code)
    m_{b,i}        masks               (B, N) bool: patch i of global crop b is masked in the student input
    g_θt(x)_i      teacher_out         teacher head outputs of the masked tokens, (n, K), n = Σ m
    p_t,i          teacher_targets     softmax-centered (EMA center of shape (1, 1, K)) or Sinkhorn-Knopp with
                                       B = n masked tokens over all ranks (see ``centering.py``)
    g_θs(x̂)_i      student_out         student head outputs at the same masked tokens, (n, K)
    w_{b,i}        masks_weight        1 / (number of masked tokens of image b), per masked token, (n,)
    τ_s            student_temp

Loss (``forward_masked``)
    L_iBOT = −(1/B) Σ_b Σ_{i: m_bi} w_bi · Σ_k p_t,ik · log softmax(g_θs,i / τ_s)_k
    i.e. the mean over all B images of the per-image mean over its masked tokens (unmasked images add 0).
    ``ssl_meta_arch`` multiplies it by loss_scales (2) · ibot_loss_scale (1/n_global = 1/2), i.e. by 1.
    ``forward`` is the dense form on (B, N, K) tokens with per-image normalisation, as the original's.
The center is updated with the mean over the masked teacher tokens of this rank (then averaged over ranks),
applied lazily at the next call.

Reference: ``iBOTPatchLoss`` in facebookresearch/dinov2 ``dinov2/loss/ibot_patch_loss.py`` (the torch path of
``lossfunc``; the xformers path is the same function) and its call in ``SSLMetaArch.forward_backward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gensis.ssl.losses.centering import EMACenter, check_centering, sinkhorn_knopp


def masks_weight_of(masks: torch.Tensor) -> torch.Tensor:
    """(B, N) bool masks -> (n,) weight 1/|masked tokens of the token's image| of every masked token (row-major)."""
    per_image = 1 / masks.sum(-1).clamp(min=1.0)  # (B,)
    return per_image.unsqueeze(-1).expand_as(masks)[masks]  # (n,)


class DINOv2iBOTPatchLoss(nn.Module):
    def __init__(self, patch_out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "centering", sinkhorn_iterations: int = 3):
        super().__init__()
        self.student_temp = student_temp
        self.centering = check_centering(centering)
        self.sinkhorn_iterations = sinkhorn_iterations
        self.center = EMACenter((1, 1, patch_out_dim), center_momentum, lazy=True)

    @torch.no_grad()
    def teacher_targets(self, teacher_out: torch.Tensor, teacher_temp: float, update_center: bool = True) -> torch.Tensor:
        """(n, K) teacher outputs at the masked tokens -> (n, K) target probabilities."""
        teacher_out = teacher_out.detach().float()
        if self.centering == "sinkhorn_knopp":
            return sinkhorn_knopp(teacher_out, teacher_temp, self.sinkhorn_iterations, n_samples=len(teacher_out))
        probs = self.center.softmax(teacher_out, teacher_temp)  # (n, K) broadcast against (1, 1, K) ...
        probs = probs.reshape(teacher_out.shape)  # ... gives (1, n, K): back to (n, K)
        if update_center:
            self.center.update(teacher_out.mean(dim=0, keepdim=True), 1)  # (1, K): mean over masked tokens
        return probs

    def forward_masked(self, student_out: torch.Tensor, teacher_targets: torch.Tensor, masks: torch.Tensor,
                       masks_weight: torch.Tensor | None = None) -> torch.Tensor:
        """student_out, teacher_targets: (n, K) at the masked tokens; masks: (B, N) bool; masks_weight: (n,)."""
        ce = torch.sum(teacher_targets * F.log_softmax(student_out.float() / self.student_temp, dim=-1), dim=-1)  # (n,)
        if masks_weight is None:
            masks_weight = masks_weight_of(masks)
        return -(ce * masks_weight).sum() / masks.shape[0]

    def forward(self, student_out: torch.Tensor, teacher_targets: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Dense form. student_out, teacher_targets: (B, N, K); masks: (B, N) bool."""
        ce = torch.sum(teacher_targets * F.log_softmax(student_out.float() / self.student_temp, dim=-1), dim=-1)  # (B, N)
        per_image = torch.sum(ce * masks.float(), dim=-1) / masks.sum(dim=-1).clamp(min=1.0)  # (B,)
        return -per_image.mean()
