"""Schedules of DINO (Caron et al., 2021; ``utils.cosine_scheduler`` in facebookresearch/dino).

Notation: v_0 = ``base_value``, v_T = ``final_value``, I = epochs·niter_per_ep iterations of which
W = warmup_epochs·niter_per_ep are a linear warm-up from ``start_warmup_value`` to v_0; for the rest

    v_i = v_T + ½ (v_0 − v_T) (1 + cos(π i / (I − W)))        i = 0 … I−W−1
"""

from __future__ import annotations

import numpy as np


def cosine_schedule(base_value: float, final_value: float, epochs: int, niter_per_ep: int,
                    warmup_epochs: float = 0, start_warmup_value: float = 0.0) -> np.ndarray:
    """One value per iteration (length epochs·niter_per_ep), as DINO's ``cosine_scheduler``."""
    total = int(epochs * niter_per_ep)
    warmup_iters = min(int(warmup_epochs * niter_per_ep), total)
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_iters > 0 else np.array([])
    iters = np.arange(total - warmup_iters)
    n = max(len(iters), 1)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / n))
    return np.concatenate((warmup, cosine))


def teacher_temp_schedule(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int) -> np.ndarray:
    """Per-epoch teacher temperature: linear warm-up then constant (DINO's ``DINOLoss``)."""
    warmup_epochs = min(warmup_epochs, epochs)
    return np.concatenate((np.linspace(warmup_temp, temp, warmup_epochs), np.ones(epochs - warmup_epochs) * temp))


class CosineScheduler:
    """DINOv2's per-iteration schedule (``CosineScheduler`` in facebookresearch/dinov2 dinov2/utils/utils.py).

    ``freeze_iters`` zeros, then a linear warm-up of ``warmup_iters`` from ``start_warmup_value`` to v_0, then the
    cosine above over the remaining I − F − W iterations; indexing past ``total_iters`` returns v_T. DINOv2 builds
    its teacher temperature with ``total_iters = warmup_iters`` (a linear ramp, then constant ``final_value``).
    """

    def __init__(self, base_value: float, final_value: float, total_iters: int, warmup_iters: int = 0,
                 start_warmup_value: float = 0.0, freeze_iters: int = 0):
        self.final_value = final_value
        self.total_iters = total_iters
        freeze = np.zeros(freeze_iters)
        warmup = np.linspace(start_warmup_value, base_value, warmup_iters)
        iters = np.arange(total_iters - warmup_iters - freeze_iters)
        cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
        self.schedule = np.concatenate((freeze, warmup, cosine))
        if len(self.schedule) != total_iters:
            raise ValueError(f"freeze_iters + warmup_iters > total_iters ({freeze_iters} + {warmup_iters} > {total_iters})")

    def __getitem__(self, it: int) -> float:
        return float(self.final_value if it >= self.total_iters else self.schedule[it])

    def __len__(self) -> int:
        return self.total_iters
