"""DINO loss, schedules and disentanglement loss: against the original DINO code's outputs and by hand."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gensis.ssl.dino_loss import DINOLoss
from gensis.ssl.disentangle_loss import disentanglement_loss
from gensis.ssl.schedules import cosine_schedule, teacher_temp_schedule

REF = json.loads((Path(__file__).parent / "dino_reference.json").read_text())  # from facebookresearch/dino


@pytest.mark.parametrize("case", range(len(REF["dino_loss"])))
def test_dino_loss_matches_original(case):
    c = REF["dino_loss"][case]
    loss_fn = DINOLoss(c["out_dim"], c["student_temp"], c["center_momentum"])
    temps = teacher_temp_schedule(c["warmup_teacher_temp"], c["teacher_temp"], c["warmup_teacher_temp_epochs"], c["nepochs"])
    for step in c["steps"]:
        np.testing.assert_allclose(loss_fn.center[0].numpy(), np.ravel(step["center_before"]), atol=1e-6)
        assert temps[step["epoch"]] == pytest.approx(step["teacher_temp"])
        loss = loss_fn(torch.tensor(step["student_output"]), torch.tensor(step["teacher_output"]), temps[step["epoch"]])
        assert loss.item() == pytest.approx(step["loss"], rel=1e-5)
        np.testing.assert_allclose(loss_fn.center[0].numpy(), np.ravel(step["center_after"]), atol=1e-5)


@pytest.mark.parametrize("case", range(len(REF["cosine_scheduler"])))
def test_cosine_schedule_matches_original(case):
    c = REF["cosine_scheduler"][case]
    s = cosine_schedule(c["base_value"], c["final_value"], c["epochs"], c["niter_per_ep"], c["warmup_epochs"],
                        c["start_warmup_value"])
    np.testing.assert_allclose(s, c["schedule"], rtol=1e-12)


def test_cosine_schedule_by_hand():
    s = cosine_schedule(1.0, 0.0, epochs=2, niter_per_ep=2, warmup_epochs=1, start_warmup_value=0.0)
    # warm-up linspace(0, 1, 2) = [0, 1]; then cos over 2 iters: 0 + .5(1 + cos(0)) = 1, .5(1 + cos(pi/2)) = .5
    np.testing.assert_allclose(s, [0.0, 1.0, 1.0, 0.5])


def test_dino_loss_by_hand():
    """Two crops, batch 1, K = 2: L = mean of CE(t_0, s_1) and CE(t_1, s_0)."""
    loss_fn = DINOLoss(2, student_temp=1.0, center_momentum=0.5)
    s = torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]])  # softmax: [.25, .75], [.75, .25]
    t = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    loss = loss_fn(s, t, teacher_temp=1.0)
    p1 = torch.softmax(torch.tensor([10.0, -10.0]), 0)
    ce_01 = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))  # teacher 0 (uniform) vs student 1
    ce_10 = -(p1[0] * math.log(0.25) + p1[1] * math.log(0.75)).item()
    assert loss.item() == pytest.approx((ce_01 + ce_10) / 2, rel=1e-6)
    np.testing.assert_allclose(loss_fn.center[0].numpy(), [2.5, -2.5])  # 0.5*0 + 0.5*mean(t)


def test_disentanglement_alpha_one_is_dino_pair():
    torch.manual_seed(0)
    dino = DINOLoss(8)
    dino.center.copy_(torch.randn(1, 8))
    s_int, t1, t2 = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    got = disentanglement_loss(dino, s_int, t1, t2, alpha=1.0, teacher_temp=0.04)
    expected = dino.cross_entropy(dino.teacher_probs(t1, 0.04), s_int)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_disentanglement_mixes_before_centering_and_sharpening():
    """Mixing raw outputs then sharpening differs from mixing sharpened distributions."""
    dino = DINOLoss(3, student_temp=0.1)
    dino.center.copy_(torch.tensor([[0.3, -0.2, 0.1]]))
    s_int = torch.tensor([[0.2, 0.1, -0.3]])
    t1, t2 = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    got = disentanglement_loss(dino, s_int, t1, t2, alpha=0.5, teacher_temp=0.5).item()
    mixed = 0.5 * t1 + 0.5 * t2  # [1, 1, 0]
    p = torch.softmax((mixed - dino.center) / 0.5, -1)
    by_hand = -(p * torch.log_softmax(s_int / 0.1, -1)).sum().item()
    assert got == pytest.approx(by_hand, rel=1e-6)
    after = 0.5 * dino.teacher_probs(t1, 0.5) + 0.5 * dino.teacher_probs(t2, 0.5)
    mixed_after = -(after * torch.log_softmax(s_int / 0.1, -1)).sum().item()
    assert abs(got - mixed_after) > 1e-3
    assert torch.equal(dino.center, torch.tensor([[0.3, -0.2, 0.1]]))  # read, never updated


def test_disentanglement_per_sample_alpha():
    dino = DINOLoss(5)
    s, t1, t2 = torch.randn(2, 5), torch.randn(2, 5), torch.randn(2, 5)
    both = disentanglement_loss(dino, s, t1, t2, torch.tensor([1.0, 0.0]), 0.07)
    a = disentanglement_loss(dino, s[:1], t1[:1], t2[:1], 1.0, 0.07)
    b = disentanglement_loss(dino, s[1:], t1[1:], t2[1:], 0.0, 0.07)
    assert both.item() == pytest.approx((a.item() + b.item()) / 2, rel=1e-6)
