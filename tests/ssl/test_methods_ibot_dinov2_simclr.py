"""iBOT, DINOv2 and SimCLR as ``Method``s: named outputs, masks, losses, Gen- hooks, optimisation settings."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gensis.config import load_config
from gensis.ssl.losses.gen_contrastive_loss import gen_contrastive_loss
from gensis.ssl.methods import METHODS, build_method
from gensis.ssl.methods.base import StepInfo, Views

TINY = ["data.image_size=16", "model.patch_size=4", "model.embed_dim=32", "model.depth=2", "model.num_heads=2",
        "aug.n_local=2", "aug.local_size=8",
        "ibot.out_dim=16", "ibot.patch_out_dim=12", "ibot.hidden_dim=16", "ibot.bottleneck_dim=8",
        "dinov2.head_n_prototypes=16", "dinov2.head_hidden_dim=16", "dinov2.head_bottleneck_dim=8",
        "dinov2.ibot_head_n_prototypes=12", "dinov2.ibot_head_hidden_dim=16", "dinov2.ibot_head_bottleneck_dim=8",
        "simclr.mlp_dim=16", "simclr.emb_dim=8"]
B, N = 6, 16  # batch, tokens of a 16 px crop with 4 px patches


def method(name: str, *extra: str):
    torch.manual_seed(0)
    return build_method(load_config("pretrain", "smoke", [f"method={name}", *TINY, *extra]))


def views(m, extra=()):
    g = torch.Generator().manual_seed(1)
    spec = m.view_spec()
    v = Views([torch.randn(B, 3, 16, 16, generator=g) for _ in range(spec.n_global)],
              [torch.randn(B, 3, 8, 8, generator=g) for _ in range(spec.n_local)],
              extra={name: torch.randn(B, 3, 16, 16, generator=g) for name in extra})
    if spec.masks:
        v.masks = m.sample_masks(B, random.Random(0))
    return v


def info(m, it=0):
    return StepInfo(0, it, {k: float(a[it]) for k, a in m.schedules(2, 3).items()})


def test_registered():
    assert {"ibot", "dinov2", "simclr"} <= set(METHODS)


@pytest.mark.parametrize("name", ["ibot", "dinov2"])
def test_masked_distillation_methods(name):
    m = method(name)
    spec = m.view_spec()
    assert spec.masks and spec.n_global == 2 and spec.n_local == 2 and m.target == "distillation"
    v = views(m, extra=("interp",))
    assert v.masks.shape == (2, B, N) and v.masks.dtype == torch.bool
    s = m.student(v)
    t = m.teacher(Views(v.global_views))
    assert s["global"].shape == (2, B, 16) and s["local"].shape == (2, B, 16) and s["extra"]["interp"].shape == (B, 16)
    loss, parts = m.loss(s, t, info(m))
    assert loss.ndim == 0 and torch.isfinite(loss) and all(torch.isfinite(p) for p in parts.values())
    loss.backward()
    # the mask token is learnt through the masked-patch term (and only the masked positions reach it)
    assert m.student.mask_token.grad is not None and m.student.mask_token.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())
    # masking changes the student's global outputs of masked images only
    unmasked = m.student(Views(v.global_views, v.local_views))
    masked_img = v.masks.any(-1)  # (2, B)
    same = torch.isclose(s["global"], unmasked["global"], atol=1e-6).all(-1)
    assert torch.equal(same, ~masked_img)
    # centers are method state the checkpoint keeps
    assert m.extra_state() and all(torch.isfinite(b).all() for b in m.extra_state().values())


def test_ibot_outputs_and_mask_ratios():
    m = method("ibot", "ibot.shared_head=false")
    v = views(m)
    n = int(v.masks.sum())
    assert m.student(v)["global_patch_masked"].shape == (n, 12)  # the student's patch head: masked tokens only
    assert method("ibot", "ibot.shared_head=true").student(v)["global_patch_masked"].shape == (n, 16)
    assert m.teacher(Views(v.global_views))["global_patch"].shape == (2, B, N, 12)  # the teacher's: every token
    masks = m.sample_masks(200, random.Random(3)).flatten(0, 1)  # (400, N)
    ratio = masks.float().mean(1)
    assert 0.35 < (ratio == 0).float().mean() < 0.65  # pred_ratio [0, 0.3]: half the crops unmasked
    assert ratio.max() <= 0.5 + 1e-6  # 0.3 + 0.2 at most
    a, b = m.sample_masks(4, random.Random(5)), m.sample_masks(4, random.Random(5))
    assert torch.equal(a, b)  # masks follow the (checkpointed) generator


def test_ibot_student_patch_head_on_masked_tokens_gives_the_dense_loss():
    """The student's patch head runs on the masked tokens only; the values there and the loss (which reads no
    other student token) are those of the original's dense (n_g·B, N, K2) outputs."""
    from gensis.ssl.methods.base import run_backbone

    m = method("ibot", "ibot.shared_head=false")
    v = views(m)
    flat = v.masks.flatten(0, 1)  # (2B, N)
    assert 0 < int(flat.sum()) < flat.numel()
    s, t = m.student(v), m.teacher(Views(v.global_views))
    tok = run_backbone(m.student.backbone, [torch.cat(v.global_views)], [flat], m.student.mask_token)[0]
    dense = m.student.head.patch(tok.patch)  # (2B, N, K2), the head on every token
    torch.testing.assert_close(s["global_patch_masked"], dense[flat], rtol=1e-5, atol=1e-6)
    loss = m.ibot_loss
    args = ((s["global"].flatten(0, 1),), (t["global"].flatten(0, 1), t["global_patch"].flatten(0, 1)),
            s["local"].flatten(0, 1), [x.view(B, 1, -1) for x in v.masks], 0)
    got = loss((args[0][0], s["global_patch_masked"]), *args[1:], update_center=False)
    want = loss((args[0][0], dense), *args[1:], update_center=False)
    for k in ("cls", "patch", "loss"):
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-6)


def test_ibot_shared_and_separate_head():
    shared, separate = method("ibot", "ibot.shared_head=true"), method("ibot", "ibot.shared_head=false")
    n_last = lambda m: len([g for g in m.param_groups() if g.get("last_layer")][0]["params"])  # noqa: E731
    assert n_last(separate) == 2 * n_last(shared)  # last_layer2 (g and v: norm_last_layer false) is frozen too
    assert hasattr(separate.student.head, "last_layer2") and not hasattr(shared.student.head, "last_layer2")


def test_ibot_disentanglement_reads_the_cls_center():
    m = method("ibot")
    m.ibot_loss.center.normal_()
    before = m.ibot_loss.center.clone()
    s_int, t = torch.randn(4, 16), torch.randn(4, 16)
    got = m.disentangle_distill(s_int, t, info(m))
    temp = m.ibot_loss.temperatures(0)[0]
    p = torch.softmax((t - before) / temp, -1)
    want = -(p * torch.log_softmax(s_int / 0.1, -1)).sum(-1).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert torch.equal(m.ibot_loss.center, before)


@pytest.mark.parametrize("centering", ["centering", "sinkhorn_knopp"])
@pytest.mark.parametrize("separate", ["false", "true"])
def test_dinov2_variants(centering, separate):
    m = method("dinov2", f"dinov2.centering={centering}", f"dinov2.ibot_separate_head={separate}")
    v = views(m)
    s, t = m.student(v), m.teacher(Views(v.global_views))
    n = int(v.masks.sum())
    assert s["global_patch_masked"].shape == (n, 12 if separate == "true" else 16)
    assert s["global_cls_tokens"].shape == (2, B, 32) and t["global_patch_tokens"].shape == (2, B, N, 32)
    loss, parts = m.loss(s, t, info(m))
    assert set(parts) == {"loss_dino_global", "loss_dino_local", "loss_koleo", "loss_ibot"}
    assert torch.isfinite(loss)
    # masks: int(2B · 0.5) crops masked, each with at most half the tokens
    assert int(v.masks.any(-1).sum()) <= B and int(v.masks.sum(-1).max()) <= N // 2


def test_dinov2_param_groups_layerwise_decay():
    m = method("dinov2", "dinov2.layerwise_decay=0.5", "dinov2.patch_embed_lr_mult=0.2")
    mult = {}
    for g in m.param_groups():
        for p in g["params"]:
            mult[id(p)] = (g["lr_mult"], g["wd_mult"], bool(g.get("last_layer")))
    bb = m.student.backbone
    depth = len(bb.blocks)  # 2: lr multipliers 0.5^(3 − layer)
    assert mult[id(bb.blocks[0].attn.qkv.weight)] == (0.5 ** 2, 1.0, False)
    assert mult[id(bb.blocks[1].attn.qkv.weight)] == (0.5 ** 1, 1.0, False)
    assert mult[id(bb.blocks[1].attn.qkv.bias)] == (0.5 ** 1, 0.0, False)
    assert mult[id(bb.patch_embed.proj.weight)] == pytest.approx((0.5 ** (depth + 1) * 0.2, 1.0, False))
    assert mult[id(bb.cls_token)][0] == 0.5 ** (depth + 1) and mult[id(m.student.mask_token)][0] == 0.5 ** (depth + 1)
    assert mult[id(bb.norm.weight)] == (1.0, 0.0, False)
    assert any(last for last in (v[2] for v in mult.values()))
    assert len(mult) == sum(p.requires_grad for p in m.student.parameters())  # every parameter once
    assert m.lr_scale(256) == pytest.approx(0.5)  # sqrt(256 / 1024)


def test_dinov2_uniform_drop_path():
    m = method("dinov2", "model.drop_path_rate=0.3", "dinov2.drop_path_uniform=true")
    rates = [blk.drop_path1.drop_prob for blk in m.student.backbone.blocks]
    assert rates == [0.3, 0.3]
    assert all(not hasattr(blk.drop_path1, "drop_prob") for blk in m.teacher.backbone.blocks)  # teacher: none


def test_dinov2_schedules():
    m = method("dinov2", "dinov2.warmup_teacher_temp_epochs=1", "dinov2.warmup_teacher_temp=0.04",
               "dinov2.teacher_temp=0.07")
    s = m.schedules(epochs=2, niter=4)
    np.testing.assert_allclose(s["teacher_temp"], [0.04, 0.05, 0.06, 0.07, 0.07, 0.07, 0.07, 0.07])
    assert s["momentum"][0] == pytest.approx(0.99) and s["momentum"][-1] > 0.999


def test_dinov2_lazy_center_is_saved_applied():
    m = method("dinov2", "dinov2.centering=centering")
    v = views(m)
    m.loss(m.student(v), m.teacher(Views(v.global_views)), info(m))
    state = {k: t.clone() for k, t in m.extra_state().items()}
    assert state["dino_loss.center.center"].abs().sum() > 0  # the step's update is in the saved center


def test_simclr():
    m = method("simclr")
    assert m.teacher is None and m.target == "contrastive" and m.view_spec().n_local == 0
    v = views(m, extra=("interp", "secondary"))
    s = m.student(v)
    assert s["global"].shape == (2, B, 8) and s["local"].shape[0] == 0 and s["extra"]["secondary"].shape == (B, 8)
    loss, parts = m.loss(s, None, info(m))
    z = F.normalize(torch.cat(list(s["global"])), dim=-1)  # (2B, E)
    sim = z @ z.t() / 0.1
    sim.fill_diagonal_(-math.inf)
    pos = torch.cat([torch.arange(B, 2 * B), torch.arange(B)])
    assert loss.item() == pytest.approx(F.cross_entropy(sim, pos).item(), rel=1e-5)
    f_real = torch.cat([s["global"][0], s["extra"]["secondary"]])
    i1 = torch.arange(B)
    alpha = torch.full((B,), 0.5)
    dis = m.disentangle_contrastive(s["extra"]["interp"], f_real, i1, i1 + B, alpha, info(m))
    assert dis.item() == pytest.approx(gen_contrastive_loss(s["extra"]["interp"], f_real, i1, i1 + B, alpha, 0.1).item())
    (loss + dis).backward()
    assert m.student.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["ibot", "dinov2", "simclr"])
def test_student_learns_the_targets_of_a_fixed_batch(name):
    """AdamW steps on one fixed batch (fixed views, masks, teacher) lower the method's loss, both losses measured
    with the loss state (centers) of the start."""
    m = method(name, "model.drop_path_rate=0.0")
    start = copy.deepcopy(m)
    v = views(m)
    step = info(m)
    t = None if m.teacher is None else m.teacher(Views(v.global_views))
    opt = torch.optim.AdamW(m.param_groups(), lr=1e-3)
    for _ in range(15):
        loss, _ = m.loss(m.student(v), t, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    before = copy.deepcopy(start).loss(start.student(v), t, step)[0].item()
    after = copy.deepcopy(start).loss(m.student(v), t, step)[0].item()
    assert math.isfinite(after) and after < before - 0.05 * abs(before)


def test_dinov2_layer_scale_from_model_init_values():
    """``model.init_values`` (DINOv2's ``layerscale: 1e-5``) puts LayerScale in every block of student and teacher;
    its gammas get the block's layer-wise lr and no weight decay, as dinov2's param groups."""
    m = method("dinov2", "model.init_values=1e-5", "dinov2.layerwise_decay=0.5")
    for net in (m.student, m.teacher):
        for blk in net.backbone.blocks:
            assert torch.allclose(blk.ls1.gamma, torch.full_like(blk.ls1.gamma, 1e-5))
            assert torch.allclose(blk.ls2.gamma, torch.full_like(blk.ls2.gamma, 1e-5))
    mult = {id(p): (g["lr_mult"], g["wd_mult"]) for g in m.param_groups() for p in g["params"]}
    assert mult[id(m.student.backbone.blocks[0].ls1.gamma)] == (0.5 ** 2, 0.0)
    assert mult[id(m.student.backbone.blocks[1].ls2.gamma)] == (0.5 ** 1, 0.0)
    assert not hasattr(method("dinov2").student.backbone.blocks[0].ls1, "gamma")  # default: none
