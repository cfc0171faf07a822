"""Teacher targets of the distillation losses: softmax centering with an EMA center, or Sinkhorn-Knopp.

Notation (papers → code)
    g_θt(x)   teacher_out       raw teacher head outputs, (B, K) (B samples: images or masked patch tokens)
    τ_t       teacher_temp
    c, m      center, momentum  EMA of the batch mean of g_θt, shape (1, K) or (1, 1, K)

Softmax centering (DINO, Caron et al. 2021, Sec. 3.1; iBOT; DINOv2 ``train.centering: centering``)
    P = softmax((g_θt(x) − c) / τ_t)
    c ← m·c + (1 − m)·mean_batch(g_θt(x))          all-reduced over ranks
    DINOv2 applies the update lazily: ``update`` starts an asynchronous all-reduce and the EMA step is taken at
    the next ``softmax`` call (``apply_center_update`` in dinov2/loss/dino_clstoken_loss.py). The result is the
    same as an eager update; only the communication overlaps the step. A pending update is applied before the
    center is saved, so checkpoints hold the center the next step uses.

Sinkhorn-Knopp (SwAV, Caron et al. 2020, Sec. 3.1; DINOv2 ``train.centering: sinkhorn_knopp``, the default)
    Q = exp(g_θt(x)ᵀ / τ_t) / Σ Q                 (K, B), B = number of samples over all ranks
    repeat n times:  rows ← rows / (K · row sums)    (each prototype gets mass 1/K, sums all-reduced)
                     cols ← cols / (B · col sums)    (each sample gets mass 1/B)
    P = (B · Q)ᵀ                                    (B, K): every row sums to 1
    No state. Reference: ``sinkhorn_knopp_teacher`` in facebookresearch/dinov2 dinov2/loss/dino_clstoken_loss.py
    and (B from the masked-patch count) dinov2/loss/ibot_patch_loss.py. The arithmetic follows it step by step.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gensis.ssl.losses.gather import all_reduce_sum_, world_size_and_rank

CENTERINGS = ("sinkhorn_knopp", "centering")


def check_centering(name: str) -> str:
    """Return ``name`` if it is a known centering, else raise ValueError listing the valid ones."""
    if name not in CENTERINGS:
        raise ValueError(f"unknown centering '{name}'; valid: {', '.join(CENTERINGS)}")
    return name


@torch.no_grad()
def sinkhorn_knopp(teacher_out: torch.Tensor, teacher_temp: float, n_iterations: int = 3,
                   n_samples: int | torch.Tensor | None = None) -> torch.Tensor:
    """Balanced soft assignment of the (B, K) teacher outputs to the K prototypes -> (B, K), rows sum to 1.

    ``n_samples``: the number of samples over all ranks; None = B · world size (DINO CLS), else a per-rank count
    that is summed over ranks (masked patch tokens differ in number between ranks).
    """
    teacher_out = teacher_out.float()
    q = torch.exp(teacher_out / teacher_temp).t()  # (K, B)
    if n_samples is None:
        b = q.shape[1] * world_size_and_rank()[0]
    else:
        b = all_reduce_sum_(torch.as_tensor(n_samples, device=q.device).clone().reshape(1))  # (1,)
    k = q.shape[0]
    q /= all_reduce_sum_(torch.sum(q))
    for _ in range(n_iterations):
        q /= all_reduce_sum_(torch.sum(q, dim=1, keepdim=True))  # (K, 1): each prototype mass 1 ...
        q /= k  # ... then 1/K
        q /= torch.sum(q, dim=0, keepdim=True)  # (1, B): each sample mass 1 ...
        q /= b  # ... then 1/B
    q *= b  # columns sum to 1: an assignment per sample
    return q.t()  # (B, K)


class EMACenter(nn.Module):
    """The center c of softmax centering, updated as an EMA of batch means (eagerly or lazily, see module doc)."""

    def __init__(self, shape: tuple[int, ...], momentum: float = 0.9, lazy: bool = True):
        super().__init__()
        self.momentum = momentum
        self.lazy = lazy
        self.register_buffer("center", torch.zeros(*shape))
        self._pending: tuple[torch.Tensor, int, object] | None = None  # (batch sum, local count, reduce handle)

    @torch.no_grad()
    def softmax(self, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """P = softmax((g_θt − c) / τ_t) along the last dim, after applying a pending update."""
        self.apply_pending()
        return F.softmax((teacher_out - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def update(self, batch_sum: torch.Tensor, count: int) -> None:
        """Queue c ← m·c + (1 − m)·(Σ_ranks batch_sum)/(count · world); applied now unless lazy."""
        batch_sum = batch_sum.detach().clone()
        handle = None
        if dist.is_available() and dist.is_initialized():
            handle = dist.all_reduce(batch_sum, async_op=True)
        self._pending = (batch_sum, count, handle)
        if not self.lazy:
            self.apply_pending()

    @torch.no_grad()
    def apply_pending(self) -> None:
        if self._pending is None:
            return
        batch_sum, count, handle = self._pending
        if handle is not None:
            handle.wait()
        mean = batch_sum / (count * world_size_and_rank()[0])
        self.center = self.center * self.momentum + mean * (1 - self.momentum)
        self._pending = None

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: D401 (nn.Module hook)
        self.apply_pending()
        super()._save_to_state_dict(destination, prefix, keep_vars)
