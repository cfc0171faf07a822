"""DINO self-distillation loss with centering and sharpening (Caron et al., 2021, Eq. 1 and Sec. 3.1).

Notation (paper → code)
    g_θs(x), g_θt(x)    student_out, teacher_out     raw head outputs, (n_crops·B, K)
    τ_s, τ_t            student_temp, teacher_temp
    c                   center                        running mean of teacher outputs, (1, K)
    m                   center_momentum

Steps
    1. P_t(x) = softmax((g_θt(x) − c) / τ_t)                    centering then sharpening of the teacher
    2. log P_s(x') = log_softmax(g_θs(x') / τ_s)
    3. L = mean over pairs (teacher global view i, student view v ≠ i) of
           mean_batch( −Σ_k P_t(x_i)_k · log P_s(x'_v)_k )
    4. c ← m·c + (1 − m)·mean_batch(g_θt(x))                    after the loss, all-reduced across ranks

With ``centering="sinkhorn_knopp"`` step 1 is DINOv2's Sinkhorn-Knopp assignment of the teacher's global-crop
outputs instead (``gensis.ssl.losses.centering.sinkhorn_knopp``: balanced over the prototypes, 3 iterations)
and step 4 is skipped (no center).

``sk_queue = Q > 0`` (beyond DINO, from SwAV, Caron et al. 2020, Sec. 4.4 "small batches" / ``swav/main_swav.py``
``--queue_length``): Sinkhorn-Knopp balances the prototypes over the batch *and* the teacher outputs of the last
Q samples (a FIFO per rank, used once full, as SwAV), so that a batch smaller than the number of prototypes
still gets sharp, balanced assignments; only the batch's rows are targets. SwAV stores embeddings and scores them
with the current prototypes; here the stored rows are the teacher's outputs when they were computed (the teacher
moves slowly, by EMA). The queue is a buffer: checkpoints hold it, ``--resume`` continues it.

Reference: ``DINOLoss`` in facebookresearch/dino (``main_dino.py``); tests compare with its outputs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gensis.ssl.losses.centering import check_centering, sinkhorn_knopp


class DINOLoss(nn.Module):
    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "centering", sk_queue: int = 0):
        super().__init__()
        self.centering = check_centering(centering)
        if sk_queue and self.centering != "sinkhorn_knopp":
            raise ValueError("a Sinkhorn-Knopp queue (sk_queue > 0) needs centering='sinkhorn_knopp'")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))
        if sk_queue:
            self.register_buffer("queue", torch.zeros(sk_queue, out_dim))  # (Q, K), newest rows first
            self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))  # rows written so far, <= Q

    def teacher_probs(self, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Step 1: centered, sharpened teacher distribution (no gradient); reads the queue, never writes it."""
        t = teacher_out.detach().float()  # (B, K)
        if self.centering == "sinkhorn_knopp":
            if self.queue_full():
                return sinkhorn_knopp(torch.cat([t, self.queue]), teacher_temp)[:len(t)]  # (B + Q, K) -> (B, K)
            return sinkhorn_knopp(t, teacher_temp)  # (B, K), rows sum to 1
        return F.softmax((t - self.center) / teacher_temp, dim=-1)

    def queue_full(self) -> bool:
        return hasattr(self, "queue") and int(self.queue_filled) >= len(self.queue)

    @torch.no_grad()
    def push_queue(self, teacher_out: torch.Tensor) -> None:
        """FIFO: the batch's teacher outputs become the queue's newest rows (the oldest drop out)."""
        if not hasattr(self, "queue"):
            return
        q = len(self.queue)
        self.queue.copy_(torch.cat([teacher_out.detach().float(), self.queue])[:q])  # (Q, K)
        self.queue_filled.fill_(min(q, int(self.queue_filled) + len(teacher_out)))

    def cross_entropy(self, teacher_p: torch.Tensor, student_out: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of −Σ_k p_k log softmax(s/τ_s)_k."""
        return torch.sum(-teacher_p * F.log_softmax(student_out.float() / self.student_temp, dim=-1), dim=-1).mean()

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, teacher_temp: float,
                n_global: int = 2, update_center: bool = True) -> torch.Tensor:
        """student_out: (n_crops·B, K) crop-major; teacher_out: (n_global·B, K), the global crops.

        Student chunk v and teacher chunk i show the same view when v == i (the first ``n_global``
        student chunks are the global crops), so those pairs are skipped.
        """
        teacher_p = self.teacher_probs(teacher_out, teacher_temp)
        t_chunks = teacher_p.chunk(n_global)  # n_global × (B, K)
        s_chunks = student_out.chunk(student_out.shape[0] // t_chunks[0].shape[0])  # n_crops × (B, K)
        total, n_terms = student_out.new_zeros((), dtype=torch.float32), 0
        for i, q in enumerate(t_chunks):
            for v, s in enumerate(s_chunks):
                if v == i:
                    continue
                total = total + self.cross_entropy(q, s)
                n_terms += 1
        if update_center and self.centering == "centering":
            self.update_center(teacher_out)
        if update_center:
            self.push_queue(teacher_out)
        return total / n_terms

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """Step 4: EMA of the batch mean of the raw teacher outputs (all-reduced under DDP)."""
        batch_center = teacher_out.detach().float().sum(dim=0, keepdim=True)
        count = torch.tensor([teacher_out.shape[0]], dtype=torch.float32, device=teacher_out.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            dist.all_reduce(count)
        batch_center = batch_center / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))
