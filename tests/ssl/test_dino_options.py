"""DINO's two options beyond its ViT defaults: BatchNorm in the head and Sinkhorn-Knopp teacher targets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gensis.config import load_config
from gensis.configs.added import added_keys
from gensis.errors import UserError
from gensis.ssl.dino_loss import DINOLoss
from gensis.ssl.losses.centering import sinkhorn_knopp
from gensis.ssl.methods import build_method
from gensis.ssl.methods.base import StepInfo, Views

TINY = ["data.image_size=16", "model.patch_size=4", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
        "dino.out_dim=16", "dino.hidden_dim=16", "dino.bottleneck_dim=8", "aug.n_local=2", "aug.local_size=8"]


def _views(b: int = 4) -> Views:
    return Views([torch.randn(b, 3, 16, 16) for _ in range(2)], [torch.randn(b, 3, 8, 8) for _ in range(2)])


def test_defaults_are_the_registered_old_values_and_build_the_plain_head():
    cfg = load_config("pretrain", "smoke", TINY)
    for key, old in added_keys("pretrain").items():
        section, name = key.split(".")
        assert cfg[section][name] == old
    m = build_method(cfg)
    assert not any(isinstance(x, nn.BatchNorm1d) for x in m.student.modules())
    assert m.dino_loss.centering == "centering"


def test_bn_in_head_after_each_hidden_linear_and_the_step_runs():
    torch.manual_seed(0)
    m = build_method(load_config("pretrain", "smoke", TINY + ["dino.use_bn_in_head=true"]))
    kinds = [type(x).__name__ for x in m.student.head.mlp]
    assert kinds == ["Linear", "BatchNorm1d", "GELU", "Linear", "BatchNorm1d", "GELU", "Linear"]
    v = _views()
    s, t = m.student(v), m.teacher(Views(v.global_views))
    info = StepInfo(0, 0, {k: float(a[0]) for k, a in m.schedules(2, 3).items()})
    loss, _ = m.loss(s, t, info)
    loss.backward()
    bn = m.student.head.mlp[1]
    assert torch.isfinite(loss) and bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0


def test_sinkhorn_knopp_targets_replace_the_center():
    torch.manual_seed(0)
    loss = DINOLoss(16, centering="sinkhorn_knopp")
    teacher, student = torch.randn(2 * 6, 16), torch.randn(4 * 6, 16)  # 2 global crops, 4 crops, batch 6
    p = loss.teacher_probs(teacher, 0.04)
    torch.testing.assert_close(p, sinkhorn_knopp(teacher, 0.04))
    torch.testing.assert_close(p.sum(1), torch.ones(12))  # an assignment per sample
    assert not torch.allclose(p, DINOLoss(16).teacher_probs(teacher, 0.04))  # not softmax centering
    value = loss(student, teacher, 0.04, n_global=2)
    s = student.chunk(4)
    q = p.chunk(2)
    want = sum(loss.cross_entropy(q[i], s[v]) for i in range(2) for v in range(4) if v != i) / 6
    assert value.item() == pytest.approx(want.item(), rel=1e-6)
    assert torch.equal(loss.center, torch.zeros(1, 16))  # no EMA center with Sinkhorn-Knopp


def test_sinkhorn_knopp_queue_fills_first_then_balances_over_batch_and_queue():
    torch.manual_seed(0)
    loss = DINOLoss(16, centering="sinkhorn_knopp", sk_queue=8)
    batches = [torch.randn(2 * 3, 16) for _ in range(3)]  # 2 global crops of batch 3: 6 teacher rows per step
    student = torch.randn(2 * 3, 16)
    # the first step: the queue is empty, targets are Sinkhorn-Knopp on the batch alone
    torch.testing.assert_close(loss.teacher_probs(batches[0], 0.04), sinkhorn_knopp(batches[0], 0.04))
    loss(student, batches[0], 0.04)
    assert int(loss.queue_filled) == 6 and not loss.queue_full()
    torch.testing.assert_close(loss.queue[:6], batches[0])  # newest rows first
    loss(student, batches[1], 0.04)
    assert loss.queue_full()
    torch.testing.assert_close(loss.queue, torch.cat([batches[1], batches[0][:2]]))  # FIFO: the oldest dropped
    # once full: balanced over batch + queue, only the batch's rows returned, each an assignment
    p = loss.teacher_probs(batches[2], 0.04)
    want = sinkhorn_knopp(torch.cat([batches[2], loss.queue]), 0.04)[:6]
    torch.testing.assert_close(p, want)
    torch.testing.assert_close(p.sum(1), torch.ones(6))
    assert not torch.allclose(p, sinkhorn_knopp(batches[2], 0.04), atol=1e-3)
    # reading targets (the disentanglement loss does) leaves the queue alone; the queue is in the state dict
    before = loss.queue.clone()
    loss.teacher_probs(batches[2], 0.04)
    assert torch.equal(loss.queue, before)
    restored = DINOLoss(16, centering="sinkhorn_knopp", sk_queue=8)
    restored.load_state_dict(loss.state_dict())
    torch.testing.assert_close(restored.teacher_probs(batches[2], 0.04), p)


def test_sinkhorn_knopp_queue_needs_sinkhorn_knopp_and_no_queue_adds_no_state():
    with pytest.raises(ValueError, match="needs centering='sinkhorn_knopp'"):
        DINOLoss(16, sk_queue=8)
    with pytest.raises(UserError, match="dino.sk_queue=8 needs dino.centering=sinkhorn_knopp"):
        build_method(load_config("pretrain", "smoke", TINY + ["dino.sk_queue=8"]))
    assert set(DINOLoss(16, centering="sinkhorn_knopp").state_dict()) == {"center"}
    m = build_method(load_config("pretrain", "smoke", TINY + ["dino.centering=sinkhorn_knopp", "dino.sk_queue=32"]))
    assert m.dino_loss.queue.shape == (32, 16)


def test_unknown_centering_is_refused():
    with pytest.raises(ValueError, match="valid: sinkhorn_knopp, centering"):
        DINOLoss(16, centering="sinkhorn")


def _step(m) -> tuple[torch.Tensor, dict, dict]:
    torch.manual_seed(1)
    v = _views()
    s, t = m.student(v), m.teacher(Views(v.global_views))
    info = StepInfo(0, 0, {k: float(a[0]) for k, a in m.schedules(2, 3).items()})
    loss, parts = m.loss(s, t, info)
    return loss, parts, s


def test_koleo_weight_adds_dinov2s_term_on_the_global_backbone_cls():
    from gensis.ssl.losses.koleo_loss import KoLeoLoss

    torch.manual_seed(0)
    plain = build_method(load_config("pretrain", "smoke", TINY))
    torch.manual_seed(0)
    with_koleo = build_method(load_config("pretrain", "smoke", TINY + ["dino.koleo_loss_weight=0.5"]))
    base, parts0, s0 = _step(plain)
    assert "loss_koleo" not in parts0  # weight 0 (the default): DINO's loss alone
    total, parts, s = _step(with_koleo)
    # the backbone CLS of the global crops, not the head's output: the first 2·B rows of the backbone's CLS
    cls = torch.cat([with_koleo.student.backbone.forward_features(x)[:, 0] for x in _views_seeded()])
    torch.testing.assert_close(s["global_cls_tokens"].flatten(0, 1), cls, rtol=1e-5, atol=1e-5)
    want = 0.5 * sum(KoLeoLoss()(x) for x in s["global_cls_tokens"])
    torch.testing.assert_close(parts["loss_koleo"], want.detach())
    assert total.item() == pytest.approx(base.item() + want.item(), rel=1e-5)  # same init and views
    assert abs(want.item()) > 1e-3  # the term is there and moves the loss
    total.backward()
    assert with_koleo.student.backbone.cls_token.grad is not None


def _views_seeded() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return _views().global_views


def test_koleo_weight_must_be_nonnegative():
    from gensis.errors import UserError

    with pytest.raises(UserError, match="koleo_loss_weight"):
        load_config("pretrain", "smoke", TINY + ["dino.koleo_loss_weight=-1"])


def test_ibot_koleo_weight_adds_the_term_on_the_masked_global_cls():
    from gensis.ssl.losses.koleo_loss import KoLeoLoss

    tiny = [x.replace("dino.", "ibot.") for x in TINY if not x.startswith("dino.")] + [
        "ibot.out_dim=16", "ibot.patch_out_dim=16", "ibot.hidden_dim=16", "ibot.bottleneck_dim=8"]

    def run(extra: list[str]) -> tuple[torch.Tensor, dict, dict]:
        torch.manual_seed(0)
        m = build_method(load_config("pretrain", "smoke", tiny + ["method=ibot"] + extra))
        torch.manual_seed(1)
        v = _views()
        v.masks = m.sample_masks(v.batch_size, __import__("random").Random(0))
        s, t = m.student(v), m.teacher(Views(v.global_views))
        info = StepInfo(0, 0, {k: float(a[0]) for k, a in m.schedules(2, 3).items()})
        loss, parts = m.loss(s, t, info)
        return loss, parts, s

    base, parts0, _ = run([])
    assert "loss_koleo" not in parts0
    total, parts, s = run(["ibot.koleo_loss_weight=0.5"])
    want = 0.5 * sum(KoLeoLoss()(x) for x in s["global_cls_tokens"])
    assert s["global_cls_tokens"].shape == (2, 4, 32)
    torch.testing.assert_close(parts["loss_koleo"], want.detach())
    assert total.item() == pytest.approx(base.item() + want.item(), rel=1e-5)
