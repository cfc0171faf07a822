"""The interface the augmentation bank asks for images: embeddings in, images out.

Any representation-conditioned generator (our E-LDM, or an off-the-shelf one such as RCG's, paper
Sec. 9.2) plugs into ``gensis bank generate`` by implementing this protocol in one adapter class.

Contract
    encode(images)            uint8 (B, 3, H, W) → float (B, D): the conditioning encoder's embedding
    generate(emb, seeds)      float (B, D) + one int seed per row → uint8 (B, 3, S, S)
                              same (embedding, seed, settings) → the same image, whatever the batch it is in
    identity                  short hash of everything that determines the output (weights, encoder)
    image_size                S
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class EmbeddingConditionedGenerator(Protocol):
    image_size: int

    @property
    def identity(self) -> str: ...

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def generate(self, embeddings: torch.Tensor, seeds: Sequence[int], guidance: float | None = None,
                 steps: int | None = None, sampler: str | None = None) -> torch.Tensor: ...


def slerp(e1: torch.Tensor, e2: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation; alpha=1 gives e1, alpha=0 gives e2 (the paper's α weights image 1).

    Notation: θ = arccos(<ê1, ê2>); slerp = sin(αθ)/sin θ · e1 + sin((1−α)θ)/sin θ · e2, with the norm
    interpolated linearly. Falls back to lerp when the vectors are (anti)parallel.
    """
    a = torch.as_tensor(alpha, dtype=e1.dtype, device=e1.device)
    if a.ndim == 1:
        a = a[:, None]
    n1, n2 = e1.norm(dim=-1, keepdim=True), e2.norm(dim=-1, keepdim=True)
    u1, u2 = e1 / n1.clamp_min(1e-12), e2 / n2.clamp_min(1e-12)
    cos = (u1 * u2).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
    theta = torch.arccos(cos)
    s = torch.sin(theta)
    direction = (torch.sin(a * theta) * u1 + torch.sin((1 - a) * theta) * u2) / s
    out = direction * (a * n1 + (1 - a) * n2)
    linear = a * e1 + (1 - a) * e2
    return torch.where(s.abs() < 1e-4, linear, out)


def lerp(e1: torch.Tensor, e2: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    a = torch.as_tensor(alpha, dtype=e1.dtype, device=e1.device)
    if a.ndim == 1:
        a = a[:, None]
    return a * e1 + (1 - a) * e2


INTERPOLATIONS = {"slerp": slerp, "lerp": lerp}
