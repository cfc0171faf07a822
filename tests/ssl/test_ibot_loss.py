"""iBOT loss against bytedance/ibot's ``iBOTLoss`` outputs (reference vectors), and by hand."""

import math

import numpy as np
import pytest
import torch

from gensis.ssl.losses.ibot_loss import iBOTLoss
from reference_vectors import load_reference

CASES = load_reference()["ibot_loss"]["cases"]
CONFIG_KEYS = ("out_dim", "patch_out_dim", "ngcrops", "nlcrops", "warmup_teacher_temp", "teacher_temp",
               "warmup_teacher_temp2", "teacher_temp2", "warmup_teacher_temp_epochs", "nepochs", "student_temp",
               "center_momentum", "center_momentum2", "lambda1", "lambda2", "mim_start_epoch")


def f32(x):
    return torch.from_numpy(np.array(x, np.float32))


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c["config"]["name"] for c in CASES])
def test_ibot_loss_matches_original(case):
    c = CASES[case]
    loss_fn = iBOTLoss(**{k: c["config"][k] for k in CONFIG_KEYS})
    np.testing.assert_allclose(loss_fn.teacher_temp_schedule, c["teacher_temp_schedule"], rtol=1e-12)
    np.testing.assert_allclose(loss_fn.teacher_temp2_schedule, c["teacher_temp2_schedule"], rtol=1e-12)
    for step in c["steps"]:
        x = step["inputs"]
        assert loss_fn.temperatures(step["epoch"]) == pytest.approx((step["temp_used"], step["temp2_used"]))
        np.testing.assert_allclose(loss_fn.center.numpy(), step["center_before"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(loss_fn.center2.numpy(), step["center2_before"], rtol=1e-5, atol=1e-7)
        local = None if x["student_local_cls"] is None else f32(x["student_local_cls"])
        masks = [torch.tensor(m, dtype=torch.bool) for m in x["student_mask"]]
        out = loss_fn((f32(x["student_cls"]), f32(x["student_patch"])), (f32(x["teacher_cls"]), f32(x["teacher_patch"])),
                      local, masks, step["epoch"])
        for k in ("cls", "patch", "loss"):
            assert out[k].item() == pytest.approx(step["outputs"][k], rel=1e-5), k
        np.testing.assert_allclose(loss_fn.center.numpy(), step["outputs"]["center_after"], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(loss_fn.center2.numpy(), step["outputs"]["center2_after"], rtol=1e-5, atol=1e-7)


def test_ibot_patch_term_by_hand():
    """One global crop pair, B = 1, 2 tokens of which one is masked: the patch term is that token's CE only."""
    loss_fn = iBOTLoss(2, 2, ngcrops=2, nlcrops=0, warmup_teacher_temp=1.0, teacher_temp=1.0,
                       warmup_teacher_temp2=1.0, teacher_temp2=1.0, warmup_teacher_temp_epochs=1, nepochs=1,
                       student_temp=1.0)
    s_cls, t_cls = torch.zeros(2, 2), torch.zeros(2, 2)
    s_patch = torch.tensor([[[0.0, math.log(3.0)], [5.0, 0.0]]] * 2)  # (2, N=2, 2); token 0: softmax [.25, .75]
    t_patch = torch.tensor([[[0.0, 0.0], [9.0, -9.0]]] * 2)  # token 0 target uniform
    mask = [torch.tensor([[[True, False]]])] * 2  # (B=1, h=1, w=2)
    out = loss_fn((s_cls, s_patch), (t_cls, t_patch), None, mask, epoch=0)
    assert out["patch"].item() == pytest.approx(-(0.5 * math.log(0.25) + 0.5 * math.log(0.75)), rel=1e-6)
    assert out["cls"].item() == pytest.approx(math.log(2.0), rel=1e-6)  # uniform vs uniform


def test_ibot_unmasked_images_add_zero_patch_loss():
    loss_fn = iBOTLoss(3, 4, 2, 0, 0.04, 0.07, 0.04, 0.07, 1, 2)
    torch.manual_seed(0)
    sp, tp = torch.randn(4, 6, 4), torch.randn(4, 6, 4)
    none = [torch.zeros(2, 2, 3, dtype=torch.bool)] * 2
    out = loss_fn((torch.randn(4, 3), sp), (torch.randn(4, 3), tp), None, none, 0)
    assert out["patch"].item() == 0.0


def dense_original_form(loss_fn, sc, sp, tc, tp, masks, epoch):
    """iBOTLoss.forward as written in bytedance/ibot (softmaxes on all tokens, then the mask)."""
    temp, temp2 = loss_fn.temperatures(epoch)
    s_cls = (sc / loss_fn.student_temp).chunk(2)
    s_patch = (sp / loss_fn.student_temp).chunk(2)
    t_cls = torch.softmax((tc - loss_fn.center) / temp, -1).chunk(2)
    t_patch = torch.softmax((tp - loss_fn.center2) / temp2, -1).chunk(2)
    l1 = l2 = 0
    for q in range(2):
        for v in range(2):
            if v == q:
                x = torch.sum(-t_patch[q] * torch.log_softmax(s_patch[v], -1), -1)
                m = masks[v].flatten(-2, -1)
                l2 = l2 + (torch.sum(x * m.float(), -1) / m.sum(-1).clamp(min=1.0)).mean()
            else:
                l1 = l1 + torch.sum(-t_cls[q] * torch.log_softmax(s_cls[v], -1), -1).mean()
    return l1 / 2 + l2 / 2


def test_masked_only_softmax_has_the_original_value_and_gradient():
    torch.manual_seed(1)
    loss_fn = iBOTLoss(5, 6, 2, 0, 0.04, 0.07, 0.04, 0.07, 2, 4)
    loss_fn.center.normal_()
    loss_fn.center2.normal_()
    sc, sp = torch.randn(6, 5, requires_grad=True), torch.randn(6, 12, 6, requires_grad=True)
    tc, tp = torch.randn(6, 5), torch.randn(6, 12, 6)
    masks = list((torch.rand(2, 3, 3, 4) < 0.4).unbind(0))
    ref = dense_original_form(loss_fn, sc, sp, tc, tp, masks, 1)
    g_ref = torch.autograd.grad(ref, (sc, sp))
    got = loss_fn((sc, sp), (tc, tp), None, masks, 1, update_center=False)["loss"]
    g_got = torch.autograd.grad(got, (sc, sp))
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
