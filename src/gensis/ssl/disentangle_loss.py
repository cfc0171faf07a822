"""Gen-SIS disentanglement loss (Gen-SIS, Algorithm 1 / Eq. 7 of the main text).

Notation (paper → code)
    I_1, I_2, I_int     primary, secondary and interpolated images (one view of each, global crops only)
    g_θt(·), g_θs(·)    teacher_1, teacher_2 (raw teacher outputs), student_int (raw student output)
    α                   alpha, per sample (B,)
    c, τ_t, τ_s         the DINO loss's center, teacher and student temperatures

Steps
    1. t_ent = α·g_θt(I_1) + (1 − α)·g_θt(I_2)         mixing of the *raw* outputs, before centering
    2. P_t = softmax((t_ent − c) / τ_t)                   centering + sharpening with DINO's center
    3. L = mean_batch( −Σ_k P_t,k · log softmax(g_θs(I_int)/τ_s)_k )

The center is only read here, never updated: it stays the running mean of the real teacher outputs
of the DINO loss, so mixed targets do not pull it (a mixed output is a convex combination of real ones,
so its mean would be close anyway, but this keeps the DINO loss exactly as in the original).
"""

from __future__ import annotations

import torch

from gensis.ssl.dino_loss import DINOLoss


def mix_teacher_outputs(teacher_1: torch.Tensor, teacher_2: torch.Tensor,
                        alpha: torch.Tensor | float) -> torch.Tensor:
    """Step 1, for any distillation method: α·t_1 + (1 − α)·t_2 of the raw (B, K) outputs, no gradient."""
    alpha = torch.as_tensor(alpha, dtype=torch.float32, device=teacher_1.device).reshape(-1, 1)  # (B|1, 1)
    return alpha * teacher_1.detach().float() + (1 - alpha) * teacher_2.detach().float()


def disentanglement_loss(dino: DINOLoss, student_int: torch.Tensor, teacher_1: torch.Tensor,
                         teacher_2: torch.Tensor, alpha: torch.Tensor | float, teacher_temp: float) -> torch.Tensor:
    """student_int, teacher_1, teacher_2: (B, K); alpha: scalar or (B,)."""
    mixed = mix_teacher_outputs(teacher_1, teacher_2, alpha)  # step 1
    target = dino.teacher_probs(mixed, teacher_temp)  # step 2 (center read, not updated)
    return dino.cross_entropy(target, student_int)  # step 3
