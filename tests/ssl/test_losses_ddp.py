"""Losses under a 2-process gloo group: contrastive negatives from both ranks with gradients to the owner rank;
Sinkhorn-Knopp and EMA centers reduced over ranks (equal to one process on the whole batch)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gensis.ssl.losses.centering import EMACenter, sinkhorn_knopp
from gensis.ssl.losses.gen_contrastive_loss import gen_contrastive_loss
from gensis.ssl.losses.multipos_contrastive_loss import NTXentLoss

WORLD, B, D, TAU = 2, 3, 5, 0.2


def make_data():
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(WORLD * B, D, generator=g) for _ in range(2)]  # global batch, 2 views
    f_int = torch.randn(WORLD * 2, D, generator=g)  # 2 interpolated anchors per rank
    idx1 = torch.tensor([0, 1, 2, 0])  # local indices into each rank's real images
    idx2 = torch.tensor([1, 2, 0, 2])
    alpha = torch.tensor([0.5, 0.3, 0.8, 1.0])
    return views, f_int, idx1, idx2, alpha


def make_teacher():
    g = torch.Generator().manual_seed(1)
    return torch.randn(WORLD * 4, 6, generator=g), torch.randn(7, 6, generator=g)  # CLS rows; 3 + 4 masked tokens


def worker(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        views, f_int, idx1, idx2, alpha = make_data()
        local = [v[rank * B:(rank + 1) * B].clone().requires_grad_(True) for v in views]
        loss = NTXentLoss(TAU)(local)
        loss.backward()
        a = slice(rank * 2, rank * 2 + 2)
        f_loc = views[0][rank * B:(rank + 1) * B].clone().requires_grad_(True)
        g_loss = gen_contrastive_loss(f_int[a], f_loc, idx1[a], idx2[a], alpha[a], TAU)
        g_loss.backward()
        t_cls, t_patch = make_teacher()
        sk = sinkhorn_knopp(t_cls[rank * 4:(rank + 1) * 4], 0.1)
        mine = t_patch[:3] if rank == 0 else t_patch[3:]  # ranks hold different numbers of masked tokens
        sk_patch = sinkhorn_knopp(mine, 0.1, n_samples=len(mine))
        center = EMACenter((1, 6), momentum=0.5)
        center.update(t_cls[rank * 4:(rank + 1) * 4].sum(0, keepdim=True), 4)
        center.apply_pending()
        torch.save({"loss": loss.detach(), "grads": [t.grad for t in local], "g_loss": g_loss.detach(),
                    "g_grad": f_loc.grad, "sk": sk, "sk_patch": sk_patch, "center": center.center}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_negatives_gathered_with_gradients(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    views, f_int, idx1, idx2, alpha = make_data()

    # one process on the whole batch: rows ordered rank-major, each rank's rows view-major, labels = global ids
    rows = [torch.cat([v[r * B:(r + 1) * B] for v in views]) for r in range(WORLD)]
    feats = torch.cat(rows).requires_grad_(True)  # (WORLD·2B, D)
    labels = torch.cat([(torch.arange(B) + r * B).repeat(2) for r in range(WORLD)])
    from gensis.ssl.losses.multipos_contrastive_loss import MultiPosConLoss
    full = MultiPosConLoss(TAU)(feats, labels)
    full.backward()
    assert torch.stack([r["loss"] for r in res]).mean().item() == pytest.approx(full.item(), rel=1e-5)
    for r in range(WORLD):
        got = torch.cat(res[r]["grads"])  # (2B, D): Σ over ranks of ∂L_rank/∂(this rank's rows)
        expected = WORLD * feats.grad[r * 2 * B:(r + 1) * 2 * B]
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)

    # Eq. 8: each rank's anchors against the real images of both ranks (global indices = local + rank·B)
    f_all = views[0].clone().requires_grad_(True)
    offsets = torch.tensor([0, 0, B, B])
    full_g = gen_contrastive_loss(f_int, f_all, idx1 + offsets, idx2 + offsets, alpha, TAU)
    full_g.backward()
    assert torch.stack([r["g_loss"] for r in res]).mean().item() == pytest.approx(full_g.item(), rel=1e-5)
    for r in range(WORLD):
        torch.testing.assert_close(res[r]["g_grad"], WORLD * f_all.grad[r * B:(r + 1) * B], rtol=1e-4, atol=1e-6)

    t_cls, t_patch = make_teacher()
    torch.testing.assert_close(torch.cat([r["sk"] for r in res]), sinkhorn_knopp(t_cls, 0.1), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(torch.cat([r["sk_patch"] for r in res]), sinkhorn_knopp(t_patch, 0.1, n_samples=7),
                               rtol=1e-5, atol=1e-7)
    for r in res:
        torch.testing.assert_close(r["center"], 0.5 * t_cls.mean(0, keepdim=True))
