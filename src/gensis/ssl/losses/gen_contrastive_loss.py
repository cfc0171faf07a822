"""Gen-SIS disentanglement loss for contrastive methods (Gen-SIS supplementary, Sec. 9.5.3, Eq. 8).

Notation (paper → code)
    f_int        f_int (M, D)      features of the interpolated images I_int (anchors)
    f_k          f (N, D)          features of the batch's real images (candidates), index k
    f_1, f_2     f[idx1], f[idx2]  the two source images I_1, I_2 of each anchor
    α            alpha (M,)        interpolation ratio (weight of I_1)
    τ            temperature
    sim          cosine similarity

    L_m = −α_m · log( e^{sim(f_int,m, f_1)/τ} / Σ_k e^{sim(f_int,m, f_k)/τ} )
          −(1 − α_m) · log( e^{sim(f_int,m, f_2)/τ} / Σ_k e^{sim(f_int,m, f_k)/τ} )
    L   = mean_m L_m

Denominator: k runs over all N real-image features of the batch (both positives and the N − 2 others; under
DDP the real features of every rank, gathered with gradient). The interpolated features, f_int,m included, are
not candidates. Both terms share the denominator, so L_m is the cross-entropy between the soft target
(α at I_1, 1 − α at I_2) and softmax_k(sim(f_int,m, f_k)/τ). At α = 1 it is InfoNCE with positive I_1.

Reference: the paper's Eq. 8 (no original code is public); tests compare with the formula computed in numpy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gensis.ssl.losses.gather import all_gather_with_grad, world_size_and_rank


def gen_contrastive_loss(f_int: torch.Tensor, f: torch.Tensor, idx1: torch.Tensor, idx2: torch.Tensor,
                         alpha: torch.Tensor | float, temperature: float = 0.1,
                         reduction: str = "mean") -> torch.Tensor:
    """f_int (M, D) anchors; f (N, D) this rank's real features; idx1, idx2 (M,) local indices into f;
    alpha scalar or (M,). Returns the mean (or, with reduction="none", the (M,) per-anchor losses)."""
    f_int = F.normalize(f_int.float(), dim=-1)  # (M, D)
    n_local = f.shape[0]
    f_all = all_gather_with_grad(F.normalize(f.float(), dim=-1))  # (world·N, D)
    offset = world_size_and_rank()[1] * n_local
    log_q = F.log_softmax(f_int @ f_all.t() / temperature, dim=-1)  # (M, world·N)
    alpha = torch.as_tensor(alpha, dtype=log_q.dtype, device=log_q.device).expand(f_int.shape[0])  # (M,)
    lq1 = log_q.gather(1, (idx1.long() + offset).view(-1, 1)).squeeze(1)  # (M,)
    lq2 = log_q.gather(1, (idx2.long() + offset).view(-1, 1)).squeeze(1)  # (M,)
    per_anchor = -alpha * lq1 - (1 - alpha) * lq2
    if reduction == "none":
        return per_anchor
    if reduction != "mean":
        raise ValueError(f"unknown reduction '{reduction}'; valid: mean, none")
    return per_anchor.mean()
