"""Whole-model parameter operations as ``torch._foreach_*`` kernels (no Python loop of small kernels per
parameter on the hot path): gradient clipping and EMA updates."""

from __future__ import annotations

import torch


@torch.no_grad()
def clip_gradients(params: list[torch.Tensor], mode: str | None, max_norm: float | None) -> torch.Tensor | None:
    """Clip the gradients of ``params`` in place; returns the total L2 norm of the gradients before clipping.

    ``mode``: ``"per_param"`` clips each parameter's gradient to norm ``max_norm`` separately (DINO's
    ``clip_gradients``: factor = max / (‖g‖ + 1e-6) when below 1); ``"global"`` clips the norm of all of
    them together (``torch.nn.utils.clip_grad_norm_``); None or a falsy ``max_norm`` only measures.
    None when no parameter has a gradient.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    norms = torch.stack(torch._foreach_norm(grads))  # (n_params,)
    total = torch.linalg.vector_norm(norms)
    if mode and max_norm:
        if mode == "per_param":
            factors = (max_norm / (norms + 1e-6)).clamp(max=1.0)  # (n_params,)
            torch._foreach_mul_(grads, list(factors.unbind()))
        elif mode == "global":
            torch._foreach_mul_(grads, (max_norm / (total + 1e-6)).clamp(max=1.0))
        else:
            raise ValueError(f"unknown clip mode '{mode}'")
    return total


@torch.no_grad()
def ema_update(target: list[torch.Tensor], source: list[torch.Tensor], momentum: float,
               skip: torch.Tensor | None = None) -> None:
    """target ← m·target + (1 − m)·source (DINO's teacher update, same arithmetic).

    ``skip``: a 0-dim device tensor, 1. for "leave target as it is" (a non-finite step, ``FiniteGuard``), read
    on the device: m becomes exactly 1 and 1 − m exactly 0 (one temporary the size of ``source``).
    """
    if skip is None:
        torch._foreach_mul_(target, momentum)
        torch._foreach_add_(target, source, alpha=1 - momentum)
        return
    keep = 1 - skip
    torch._foreach_mul_(target, skip + keep * momentum)
    torch._foreach_add_(target, torch._foreach_mul(source, keep * (1 - momentum)))


@torch.no_grad()
def ema_lerp(target: list[torch.Tensor], source: list[torch.Tensor], weight: float,
             skip: torch.Tensor | None = None) -> None:
    """target ← target + w·(source − target) (``lerp_``, as the E-LDM's EMA); ``skip`` as in ``ema_update``
    (w becomes exactly 0; then target + 0·(source − target), through a temporary)."""
    if skip is None:
        torch._foreach_lerp_(target, source, weight)
        return
    delta = torch._foreach_sub(source, target)
    torch._foreach_mul_(delta, (1 - skip) * weight)
    torch._foreach_add_(target, delta)
