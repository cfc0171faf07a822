"""One forward + backward of each SSL loss, gensis against lightly, on the same inputs.

    python benchmarks/bench_losses.py                         # B=32, K=4096, 2 global + 8 local, 14×14 patches
    python benchmarks/bench_losses.py --batch-size 64 --out-dim 8192 --reps 20 --threads 1

Pairs (gensis ↔ lightly 1.6.0), given identical head outputs (float32, CPU by default):

    dinov2_dino   DINOv2DINOLoss (softmax centering, multi-crop terms)   ↔ DINOLoss (center_mode='mean')
    dinov2_sk     DINOv2DINOLoss (Sinkhorn-Knopp)                         ↔ DINOLoss (no SK in lightly; for scale)
    ibot          iBOTLoss (CLS + dense masked patch term, both centers)  ↔ DINOLoss + IBOTPatchLoss
    ibot_patch    DINOv2iBOTPatchLoss.forward_masked (masked tokens)      ↔ IBOTPatchLoss
    koleo         KoLeoLoss                                               ↔ KoLeoLoss
    ntxent        NTXentLoss (StableRep MultiPosConLoss, 2 views)         ↔ NTXentLoss

Each timed call builds the teacher targets (incl. centering), the loss, and its backward (gradients to the
student inputs). Repetitions are interleaved (ours, theirs, theirs, ours, ...) and the medians compared:
ratio = lightly time / gensis time (> 1: gensis faster). The first values of the two are printed as a check
where the two compute the same quantity (the DINO CLS, iBOT patch, KoLeo, NT-Xent values agree to float32
rounding; iBOT's patch center is the mean over all tokens, as the original, lightly's over the masked ones).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from gensis.ssl.losses.dinov2_dino_loss import DINOv2DINOLoss
from gensis.ssl.losses.dinov2_ibot_patch_loss import DINOv2iBOTPatchLoss
from gensis.ssl.losses.ibot_loss import iBOTLoss
from gensis.ssl.losses.koleo_loss import KoLeoLoss
from gensis.ssl.losses.multipos_contrastive_loss import NTXentLoss
from gensis.ssl.masking import ibot_masks


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, float]:
    t0 = time.perf_counter()
    v = fn()
    return time.perf_counter() - t0, float(v)


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().clone().requires_grad_(True)


def build_cases(a: argparse.Namespace) -> dict[str, tuple[Callable, Callable]]:
    import lightly.loss as L

    g = torch.Generator().manual_seed(0)
    B, K, K2, nl, grid = a.batch_size, a.out_dim, a.patch_out_dim, a.n_local, (a.grid, a.grid)
    N = grid[0] * grid[1]
    s_glob, s_loc = torch.randn(2 * B, K, generator=g), torch.randn(nl * B, K, generator=g)
    t_glob = torch.randn(2 * B, K, generator=g)
    s_patch, t_patch = torch.randn(2 * B, N, K2, generator=g), torch.randn(2 * B, N, K2, generator=g)
    import random
    masks = ibot_masks(2 * B, grid, rng=random.Random(0))  # (2B, h, w), iBOT's ViT-S recipe ratios
    flat = masks.flatten(1)  # (2B, N)
    s_m, t_m = s_patch[flat], t_patch[flat]  # (n, K2) masked tokens
    feats = torch.randn(2 * B, a.embed_dim, generator=g)
    z1, z2 = torch.randn(B, 128, generator=g), torch.randn(B, 128, generator=g)
    temp = 0.07

    def ours_dino(centering):
        loss = DINOv2DINOLoss(K, centering=centering)

        def run():
            s, l = leaf(s_glob), leaf(s_loc)
            targets = loss.teacher_targets(t_glob, temp).view(2, B, K)  # (2, B, K)
            terms = loss.multicrop_terms(s, l, targets)
            out = terms["global"] + terms["local"]
            out.backward()
            return out
        return run

    def theirs_dino():
        loss = L.DINOLoss(K, center_mode="mean")

        def run():
            s, l = leaf(s_glob), leaf(s_loc)
            out = loss(list(t_glob.chunk(2)), list(s.chunk(2)) + list(l.chunk(nl)), teacher_temp=temp)
            out.backward()
            return out
        return run

    def ours_ibot():
        loss = iBOTLoss(K, K2, 2, nl, temp, temp, temp, temp, 1, 1)  # τ_t = τ_t' = temp from epoch 0
        m2 = list(masks.view(2, B, *grid))

        def run():
            s, l, sp = leaf(s_glob), leaf(s_loc), leaf(s_patch)
            out = loss((s, sp), (t_glob, t_patch), l, m2, 0)["loss"]
            out.backward()
            return out
        return run

    def theirs_ibot():
        dino, patch = L.DINOLoss(K, center_mode="mean"), L.IBOTPatchLoss(K2, center_mode="mean")

        def run():
            s, l, sp = leaf(s_glob), leaf(s_loc), leaf(s_patch)
            out = dino(list(t_glob.chunk(2)), list(s.chunk(2)) + list(l.chunk(nl)), teacher_temp=temp)
            out = out + patch(t_patch[flat], sp[flat], masks, teacher_temp=temp)
            out.backward()
            return out
        return run

    def ours_patch():
        loss = DINOv2iBOTPatchLoss(K2)

        def run():
            s = leaf(s_m)
            out = loss.forward_masked(s, loss.teacher_targets(t_m, temp), flat)
            out.backward()
            return out
        return run

    def theirs_patch():
        loss = L.IBOTPatchLoss(K2, center_mode="mean")

        def run():
            s = leaf(s_m)
            out = loss(t_m, s, masks, teacher_temp=temp)
            out.backward()
            return out
        return run

    def koleo(cls):
        loss = cls()

        def run():
            x = leaf(feats)
            out = sum(loss(p) for p in x.chunk(2))
            out.backward()
            return out
        return run

    def ours_nt():
        loss = NTXentLoss(0.1)

        def run():
            a_, b_ = leaf(z1), leaf(z2)
            out = loss([a_, b_])
            out.backward()
            return out
        return run

    def theirs_nt():
        loss = L.NTXentLoss(temperature=0.1)

        def run():
            a_, b_ = leaf(z1), leaf(z2)
            out = loss(a_, b_)
            out.backward()
            return out
        return run

    return {
        "dinov2_dino": (ours_dino("centering"), theirs_dino()),
        "dinov2_sk": (ours_dino("sinkhorn_knopp"), theirs_dino()),
        "ibot": (ours_ibot(), theirs_ibot()),
        "ibot_patch": (ours_patch(), theirs_patch()),
        "koleo": (koleo(KoLeoLoss), koleo(L.KoLeoLoss)),
        "ntxent": (ours_nt(), theirs_nt()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out-dim", type=int, default=4096)
    p.add_argument("--patch-out-dim", type=int, default=4096)
    p.add_argument("--n-local", type=int, default=8)
    p.add_argument("--grid", type=int, default=14, help="patch grid side of a global crop (224/16 = 14)")
    p.add_argument("--embed-dim", type=int, default=384)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", default=None, help="comma-separated case names")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    cases = build_cases(a)
    names = a.only.split(",") if a.only else list(cases)
    print(f"B={a.batch_size} K={a.out_dim} K_patch={a.patch_out_dim} n_local={a.n_local} grid={a.grid}x{a.grid} "
          f"reps={a.reps} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'loss':<12} {'gensis ms':>10} {'lightly ms':>11} {'ratio':>7}   first value gensis / lightly")
    for name in names:
        ours, theirs = cases[name]
        v_ours, v_theirs = timed(ours)[1], timed(theirs)[1]
        for _ in range(a.warmup):
            ours(), theirs()
        t_o, t_t = [], []
        for r in range(a.reps):  # interleaved: o t t o o t ...
            order = (ours, theirs) if r % 2 == 0 else (theirs, ours)
            for fn in order:
                (t_o if fn is ours else t_t).append(timed(fn)[0])
        mo, mt = statistics.median(t_o) * 1e3, statistics.median(t_t) * 1e3
        print(f"{name:<12} {mo:>10.2f} {mt:>11.2f} {mt / mo:>7.2f}   {v_ours:.6f} / {v_theirs:.6f}")


if __name__ == "__main__":
    main()
