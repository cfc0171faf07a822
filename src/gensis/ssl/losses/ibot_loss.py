"""iBOT loss: self-distillation on the CLS token + masked image modelling with an online tokenizer
(Zhou et al., ICLR 2022, Eq. 1-2 and Sec. 3.2).

Notation (paper → code)
    u, v                 two global crops (teacher sees them unmasked, the student with block masks m)
    ĥ_s^{[CLS]}, ĥ_t     student_cls (n_g·B, K), teacher_cls (n_g·B, K)  raw CLS head outputs, crop-major
    ĥ_s^{patch}          student_patch, teacher_patch (n_g·B, N, K2)     raw patch head outputs, N = h·w
                         (student_patch may instead hold the masked tokens' rows only, (n, K2): see ``forward``)
    student_local_cls    (n_l·B, K) CLS outputs of the local crops (or None)
    m_i                  student_mask[c] (B, h, w) bool, global crops c first
    τ_s, τ_t, τ_t'       student_temp, teacher temperature schedules for CLS and patches (per epoch)
    c, c'                center (1, K), center2 (1, 1, K2): EMA centers of CLS and patch outputs
    λ_1, λ_2             lambda1, lambda2

Steps
    1. P_t = softmax((ĥ_t^{[CLS]} − c)/τ_t), P_t' = softmax((ĥ_t^{patch} − c')/τ_t')    (no gradient)
    2. CLS term (DINO): for teacher global crop q and student crop v ≠ q
           L_cls = λ_1 · mean_{(q,v)} mean_batch −Σ_k P_t(q)_k log softmax(ĥ_s^{[CLS]}(v)/τ_s)_k
    3. patch term (MIM), same crop q = v only:
           L_mim = λ_2 · mean_q mean_batch [ Σ_i m_i · (−Σ_k P_t'(q)_ik log softmax(ĥ_s^{patch}(q)_i/τ_s)_k)
                                            / max(Σ_i m_i, 1) ]
    4. c  ← m·c  + (1−m)·mean_batch ĥ_t^{[CLS]}
       c' ← m'·c' + (1−m')·mean_batch mean_tokens ĥ_t^{patch}     (all tokens, masked or not; all-reduced)

τ_t: linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp`` over ``warmup_teacher_temp_epochs`` epochs,
then constant. τ_t' the same with its own values, delayed by ``mim_start_epoch`` epochs at the warm-up value.

Reference: ``iBOTLoss`` in bytedance/ibot ``main_ibot.py`` (``forward`` and ``update_center``); tests compare with
outputs of that code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gensis.ssl.losses.gather import all_reduce_sum_, world_size_and_rank


def ibot_temperature_schedules(warmup_teacher_temp: float, teacher_temp: float, warmup_teacher_temp2: float,
                               teacher_temp2: float, warmup_teacher_temp_epochs: int, nepochs: int,
                               mim_start_epoch: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-epoch teacher temperatures (CLS, patch), as ``iBOTLoss.__init__`` (a warm-up longer than the run is
    cut to the run's length, where the original would fail)."""
    warmup_teacher_temp_epochs = min(warmup_teacher_temp_epochs, nepochs - mim_start_epoch)
    temp = np.concatenate((np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
                           np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp))
    if mim_start_epoch == 0:
        temp2 = np.concatenate((np.linspace(warmup_teacher_temp2, teacher_temp2, warmup_teacher_temp_epochs),
                                np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp2))
    else:
        temp2 = np.concatenate((np.ones(mim_start_epoch) * warmup_teacher_temp2,
                                np.linspace(warmup_teacher_temp2, teacher_temp2, warmup_teacher_temp_epochs),
                                np.ones(nepochs - warmup_teacher_temp_epochs - mim_start_epoch) * teacher_temp2))
    return temp, temp2


class iBOTLoss(nn.Module):  # noqa: N801 (the original's name)
    def __init__(self, out_dim: int, patch_out_dim: int, ngcrops: int, nlcrops: int, warmup_teacher_temp: float,
                 teacher_temp: float, warmup_teacher_temp2: float, teacher_temp2: float,
                 warmup_teacher_temp_epochs: int, nepochs: int, student_temp: float = 0.1,
                 center_momentum: float = 0.9, center_momentum2: float = 0.9, lambda1: float = 1.0,
                 lambda2: float = 1.0, mim_start_epoch: int = 0):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.center_momentum2 = center_momentum2
        self.ngcrops = ngcrops
        self.nlcrops = nlcrops
        self.lambda1 = lambda1
        self.lambda2 = lambda2
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("center2", torch.zeros(1, 1, patch_out_dim))
        self.teacher_temp_schedule, self.teacher_temp2_schedule = ibot_temperature_schedules(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp2, teacher_temp2, warmup_teacher_temp_epochs,
            nepochs, mim_start_epoch)

    def temperatures(self, epoch: int) -> tuple[float, float]:
        """(τ_t, τ_t') at ``epoch``; the last value past the schedule's end."""
        e = min(epoch, len(self.teacher_temp_schedule) - 1)
        return float(self.teacher_temp_schedule[e]), float(self.teacher_temp2_schedule[e])

    @torch.no_grad()
    def cls_targets(self, teacher_cls: torch.Tensor, epoch: int) -> torch.Tensor:
        """Step 1 for CLS outputs (N, K) -> softmax((ĥ_t − c)/τ_t) (N, K); the center is read, not updated."""
        return F.softmax((teacher_cls.detach().float() - self.center) / self.temperatures(epoch)[0], dim=-1)

    def cls_cross_entropy(self, targets: torch.Tensor, student_cls: torch.Tensor) -> torch.Tensor:
        """mean_batch −Σ_k P_k log softmax(ĥ_s/τ_s)_k for (N, K) targets and raw student outputs."""
        return torch.sum(-targets * F.log_softmax(student_cls.float() / self.student_temp, dim=-1), dim=-1).mean()

    def forward(self, student_output: tuple[torch.Tensor, torch.Tensor], teacher_output: tuple[torch.Tensor, torch.Tensor],
                student_local_cls: torch.Tensor | None, student_mask: Sequence[torch.Tensor], epoch: int,
                update_center: bool = True) -> dict[str, torch.Tensor]:
        """Returns {"cls": λ_1·L_cls, "patch": λ_2·L_mim, "loss": their sum}; updates both centers.

        ``student_patch``: (n_g·B, N, K2) as the original, or (n, K2), the outputs at the n masked tokens of the
        global crops in the row-major order of their masks (what ``student_patch[masks]`` gives): the loss reads
        no other student token, so a student may run its head on those alone (``iBOTNet`` does); same value."""
        student_cls, student_patch = student_output
        teacher_cls, teacher_patch = teacher_output
        if student_local_cls is not None:
            student_cls = torch.cat([student_cls, student_local_cls])  # ((n_g + n_l)·B, K)
        s_cls = (student_cls.float() / self.student_temp).chunk(self.ngcrops + self.nlcrops)  # n_crops × (B, K)
        # the masked tokens of all global crops in one gather: (n_g·B, N) masks -> n_g chunks of (n_q, K2)
        masks = torch.cat([m.flatten(-2, -1) for m in student_mask[:self.ngcrops]])  # (n_g·B, N)
        counts = masks.view(self.ngcrops, -1).sum(1).tolist()  # masked tokens per crop
        s_masked = student_patch if student_patch.dim() == 2 else student_patch[masks]  # (n, K2)
        s_patch = s_masked.split(counts)  # n_g × (n_q, K2)
        t_patch = teacher_patch.detach()[masks].split(counts)  # n_g × (n_q, K2)
        m_chunks = masks.chunk(self.ngcrops)  # n_g × (B, N)
        t_cls = self.cls_targets(teacher_cls, epoch).chunk(self.ngcrops)  # n_g × (B, K)
        temp2 = self.temperatures(epoch)[1]

        total_cls, n_cls = torch.zeros((), device=s_cls[0].device), 0
        total_patch, n_patch = torch.zeros((), device=s_cls[0].device), 0
        for q in range(len(t_cls)):
            for v in range(len(s_cls)):
                if v == q:
                    total_patch = total_patch + self._masked_patch_ce(s_patch[v], t_patch[q], m_chunks[v], temp2)
                    n_patch += 1
                else:
                    ce = torch.sum(-t_cls[q] * F.log_softmax(s_cls[v], dim=-1), dim=-1)  # (B,)
                    total_cls = total_cls + ce.mean()
                    n_cls += 1
        total_cls = total_cls / n_cls * self.lambda1
        total_patch = total_patch / n_patch * self.lambda2
        if update_center:
            self.update_center(teacher_cls, teacher_patch)
        return {"cls": total_cls, "patch": total_patch, "loss": total_cls + total_patch}

    def _masked_patch_ce(self, s_masked: torch.Tensor, t_masked: torch.Tensor, mask: torch.Tensor,
                         temp2: float) -> torch.Tensor:
        """Step 3 for one crop: mean over images of the mean CE over the image's masked tokens (0 if none).

        s_masked, t_masked: (n, K2) outputs at the crop's masked tokens (row-major order of ``mask`` (B, N)).
        Only masked tokens enter the loss, so the softmaxes are taken at those tokens only (the original takes
        them on all N tokens and multiplies by the mask: the same value and the same, zero elsewhere, gradient).
        """
        weight = (1 / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(mask)[mask]  # (n,) 1/|masked of its image|
        p = F.softmax((t_masked.float() - self.center2[0]) / temp2, dim=-1)  # (n, K2)
        log_q = F.log_softmax(s_masked.float() / self.student_temp, dim=-1)  # (n, K2)
        ce = torch.sum(-p * log_q, dim=-1)  # (n,)
        return (ce * weight).sum() / mask.shape[0]

    @torch.no_grad()
    def update_center(self, teacher_cls: torch.Tensor, teacher_patch: torch.Tensor) -> None:
        """Step 4 (all-reduced over ranks)."""
        world = world_size_and_rank()[0]
        cls_center = all_reduce_sum_(torch.sum(teacher_cls.float(), dim=0, keepdim=True))  # (1, K)
        cls_center = cls_center / (len(teacher_cls) * world)
        self.center = self.center * self.center_momentum + cls_center * (1 - self.center_momentum)
        patch_center = all_reduce_sum_(torch.sum(teacher_patch.float().mean(1), dim=0, keepdim=True))  # (1, K2)
        patch_center = patch_center / (len(teacher_patch) * world)
        self.center2 = self.center2 * self.center_momentum2 + patch_center * (1 - self.center_momentum2)
