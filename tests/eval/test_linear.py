"""Linear probe: the vectorized multi-head SGD equals torch's SGD + CosineAnnealingLR, one head at a time."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gensis.data.sources import ArrayImageSet
from gensis.errors import UserError
from gensis.eval.linear import (LinearConfig, augmented_features, fit_linear_heads, linear_eval,
                                random_resized_crop_flip, score_linear_heads, train_linear_heads)
from gensis.models.encoder import load_encoder


def _reference_fit(feats, y, num_classes, cfg, head):
    """One head trained the way DINO's eval_linear.py does: nn.Linear + SGD + CosineAnnealingLR per epoch.

    Uses the same random stream as ``fit_linear_heads`` (init of all heads, then one permutation per epoch).
    """
    K, N, D = feats.shape
    g = torch.Generator().manual_seed(cfg.seed)
    w0 = torch.randn(len(cfg.lrs), num_classes, D, generator=g) * 0.01
    linear = torch.nn.Linear(D, num_classes)
    with torch.no_grad():
        linear.weight.copy_(w0[head])
        linear.bias.zero_()
    opt = torch.optim.SGD(linear.parameters(), lr=cfg.lrs[head] * cfg.batch_size / 256, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs, eta_min=0)
    for epoch in range(cfg.epochs):
        perm = torch.randperm(N, generator=g)
        for b in range(0, N, cfg.batch_size):
            idx = perm[b:b + cfg.batch_size]
            loss = F.cross_entropy(linear(feats[epoch % K][idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return linear.weight.detach(), linear.bias.detach()


@pytest.mark.parametrize("K,wd", [(1, 0.0), (3, 0.0), (2, 1e-3)])
def test_heads_equal_torch_sgd(K, wd):
    torch.manual_seed(0)
    N, D, C = 90, 6, 4
    feats = torch.randn(K, N, D)
    y = torch.randint(0, C, (N,))
    cfg = LinearConfig(lrs=(0.01, 0.3, 2.0), epochs=5, batch_size=32, weight_decay=wd, seed=3)
    weight, bias, _ = fit_linear_heads(feats, y, C, cfg, show_progress=False)
    for h in range(len(cfg.lrs)):
        w_ref, b_ref = _reference_fit(feats, y, C, cfg, h)
        torch.testing.assert_close(weight[h], w_ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bias[h], b_ref, rtol=1e-4, atol=1e-5)


def test_scores_by_hand():
    # one head, 2-d features, 3 classes: logits = x W^T + b
    weight = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])  # (1, 3, 2)
    bias = torch.zeros(1, 3)
    x = torch.tensor([[2.0, 1.0], [0.0, 3.0], [-1.0, -2.0], [1.0, 0.5]])  # argmax: 0, 1, 2, 0
    y = torch.tensor([0, 1, 1, 2])  # right, right, wrong (predicts 2), wrong (predicts 0)
    top1, top5 = score_linear_heads(weight, bias, x, y)
    assert float(top1[0]) == 50.0
    assert float(top5[0]) == 100.0  # 3 classes: the top-5 holds them all


def test_separable_data_and_divergence_flag():
    torch.manual_seed(0)
    x = torch.randn(300, 5)
    y = (x[:, 0] > 0).long()
    cfg = LinearConfig(lrs=(0.1, 1e38), epochs=20, batch_size=64)
    good, bad = train_linear_heads(x, y, x, y, 2, cfg, show_progress=False)
    assert good.top1 > 97 and not good.diverged
    assert bad.diverged and bad.top1 is None


def test_random_resized_crop_flip():
    images = torch.randint(0, 256, (6, 3, 10, 12), dtype=torch.uint8)
    a = random_resized_crop_flip(images, 7, (0.08, 1.0), torch.Generator().manual_seed(1))
    b = random_resized_crop_flip(images, 7, (0.08, 1.0), torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 7, 7) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    # a constant image stays constant whatever the crop
    const = torch.full((4, 3, 9, 9), 77, dtype=torch.uint8)
    assert (random_resized_crop_flip(const, 5, (0.2, 1.0), torch.Generator()) == 77).all()


def _toy(n=80, seed=0):
    g = np.random.default_rng(seed)
    labels = (np.arange(n) // 2) % 2  # both classes in the even and in the odd indices
    images = (g.random((n, 8, 8)) * 60).astype(np.uint8)
    images[labels == 1] += 150  # class 1 is bright
    return ArrayImageSet(images, labels, classes=["dark", "bright"], name="toy")


def test_augmented_features_shape_and_seed():
    ds = _toy(20)
    enc = load_encoder("pixels", image_size=8)
    f1 = augmented_features(enc, ds, copies=2, seed=5, batch_size=7)
    f2 = augmented_features(enc, ds, copies=2, seed=5, batch_size=7)
    assert f1.shape == (2, 20, enc.dim)
    assert torch.equal(f1, f2)
    assert not torch.equal(f1[0], f1[1])  # two different augmentations


def test_linear_eval_end_to_end():
    ds = _toy()
    cfg = LinearConfig(lrs=(0.3, 3.0), epochs=20, batch_size=16, aug_copies=2)
    res = linear_eval(load_encoder("pixels", image_size=8), ds.subset(np.arange(0, 80, 2), "toy@train"),
                      ds.subset(np.arange(1, 80, 2), "toy@val"), cfg)
    assert [r["lr"] for r in res["results"]] == [0.3, 3.0]
    assert res["top1"] == max(r["top1"] for r in res["results"]) and res["top1"] > 90
    assert res["config"]["aug_copies"] == 2 and res["encoder"]["name"] == "pixels"
    assert res["test"]["size"] == 40
    json.dumps(res)
    from gensis.eval.linear import format_linear

    assert "(20 epochs, batch 16, 2 aug. copies)" in format_linear(res)
    one = {**res, "config": {**res["config"], "epochs": 1, "aug_copies": 1}}
    assert "(1 epoch, batch 16, 1 aug. copy)" in format_linear(one)  # was '1 epochs ... 1 aug. copies'


@pytest.mark.parametrize("kw,msg", [({"lrs": ()}, "learning rates"), ({"epochs": 0}, "epochs"),
                                    ({"crop_scale": (0.5, 0.1)}, "crop scale"), ({"aug_copies": 0}, "aug-copies")])
def test_config_checks(kw, msg):
    with pytest.raises(UserError, match=msg):
        LinearConfig(**kw).check()
