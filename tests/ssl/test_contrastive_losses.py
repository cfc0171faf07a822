"""NT-Xent / StableRep's MultiPosConLoss against the original's outputs; the paper's Eq. 8 against the formula."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gensis.ssl.losses.gen_contrastive_loss import gen_contrastive_loss
from gensis.ssl.losses.multipos_contrastive_loss import MultiPosConLoss, NTXentLoss, image_labels
from reference_vectors import load_reference

REF = load_reference()
CASES = REF["stablerep_multipos_contrastive"]["cases"]
EQ8 = REF["eq8_formula_not_original_code"]


def f32(x):
    return torch.from_numpy(np.array(x, np.float32))


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c["name"] for c in CASES])
def test_multipos_matches_original(case):
    c = CASES[case]
    feats, labels = f32(c["inputs"]["feats"]), torch.tensor(c["inputs"]["labels"])
    np.testing.assert_array_equal(labels.numpy(), image_labels(c["n_images"], c["n_views"]).numpy())
    got = MultiPosConLoss(c["temperature"])(feats, labels)
    assert got.item() == pytest.approx(c["outputs"]["loss"], rel=1e-5)
    views = list(feats.chunk(c["n_views"]))  # view-major rows
    assert NTXentLoss(c["temperature"])(views).item() == pytest.approx(c["outputs"]["loss"], rel=1e-5)


def test_ntxent_by_hand():
    """2 images × 2 views: each anchor's positive is its other view, the 2 remaining rows are negatives."""
    torch.manual_seed(0)
    z1, z2 = torch.randn(2, 4), torch.randn(2, 4)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = z @ z.t() / 0.5
    losses = []
    for a in range(4):
        pos = (a + 2) % 4
        others = [b for b in range(4) if b != a]
        losses.append(-(sim[a, pos] - torch.logsumexp(sim[a, others], 0)))
    assert NTXentLoss(0.5)([z1, z2]).item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-6)


def eq8_inputs():
    x = EQ8["inputs"]
    pairs = torch.tensor(x["pairs_i1_i2"])
    return f32(x["f_int"]), f32(x["f"]), pairs[:, 0], pairs[:, 1], f32(x["alpha"]), x["tau"]


def test_eq8_matches_formula_main_denominator():
    f_int, f, i1, i2, alpha, tau = eq8_inputs()
    per = gen_contrastive_loss(f_int, f, i1, i2, alpha, tau, reduction="none")
    np.testing.assert_allclose(per.numpy(), EQ8["outputs"]["per_anchor_loss"], rtol=1e-5)
    assert gen_contrastive_loss(f_int, f, i1, i2, alpha, tau).item() == pytest.approx(EQ8["outputs"]["loss"], rel=1e-5)
    cos = F.normalize(f_int, dim=-1) @ F.normalize(f, dim=-1).t()
    np.testing.assert_allclose(cos.numpy(), EQ8["outputs"]["cos_sim_f_int_vs_f"], rtol=1e-5, atol=1e-6)
    # and not the alternative (each term without the other positive): the choice matters on these inputs
    assert abs(EQ8["outputs"]["loss"] - EQ8["outputs"]["loss_alt"]) > 1e-3


def test_eq8_at_alpha_one_is_infonce():
    f_int, f, i1, i2, _, tau = eq8_inputs()
    got = gen_contrastive_loss(f_int, f, i1, i2, 1.0, tau)
    logits = F.normalize(f_int, dim=-1) @ F.normalize(f, dim=-1).t() / tau
    assert got.item() == pytest.approx(F.cross_entropy(logits, i1).item(), rel=1e-6)
    # alpha = 0: InfoNCE with the second image as positive
    got0 = gen_contrastive_loss(f_int, f, i1, i2, 0.0, tau)
    assert got0.item() == pytest.approx(F.cross_entropy(logits, i2).item(), rel=1e-6)


def test_eq8_is_linear_in_alpha_and_has_gradients():
    f_int, f, i1, i2, _, tau = eq8_inputs()
    f_int.requires_grad_(True)
    f.requires_grad_(True)
    a = torch.tensor([0.5, 0.25, 0.75, 0.5])
    loss = gen_contrastive_loss(f_int, f, i1, i2, a, tau)
    l1 = gen_contrastive_loss(f_int, f, i1, i2, 1.0, tau, reduction="none")
    l0 = gen_contrastive_loss(f_int, f, i1, i2, 0.0, tau, reduction="none")
    assert loss.item() == pytest.approx((a * l1 + (1 - a) * l0).mean().item(), rel=1e-6)
    loss.backward()
    assert f_int.grad.abs().sum() > 0 and f.grad.abs().sum() > 0
    assert math.isfinite(loss.item())
