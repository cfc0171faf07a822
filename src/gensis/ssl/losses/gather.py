"""All-gather across ranks that keeps gradients for the local part (negatives from every rank).

``torch.distributed.all_gather`` returns tensors without autograd history. ``all_gather_with_grad`` does what
the autograd-aware ``torch.distributed.nn.functional.all_gather`` used by StableRep's ``MultiPosConLoss`` does
(deprecated in recent torch): in the backward pass each rank receives the sum over ranks of the gradients of
its own slice, so a loss that uses gathered features as negatives also trains the features of the other
ranks' anchors. Every rank must contribute the same number of rows.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size_and_rank() -> tuple[int, int]:
    """(world size, rank); (1, 0) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        world, rank = world_size_and_rank()
        out = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(out, x.contiguous())
        ctx.rows = (rank * x.shape[0], (rank + 1) * x.shape[0])
        return torch.cat(out, dim=0)  # (world·n, ...)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # Σ over ranks of ∂L_rank/∂(gathered rows) ...
        return grad[ctx.rows[0]:ctx.rows[1]]  # ... of this rank's rows


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n, ...) of every rank along dim 0 -> (world·n, ...), differentiable; identity on 1 rank."""
    if world_size_and_rank()[0] == 1:
        return x
    return _AllGather.apply(x)


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n, ...) of every rank along dim 0 -> (world·n, ...), without gradient."""
    world, _ = world_size_and_rank()
    if world == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def all_reduce_sum_(x: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op on 1 rank); returns ``x``."""
    if world_size_and_rank()[0] > 1:
        dist.all_reduce(x)
    return x
