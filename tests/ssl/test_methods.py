"""The method interface: registry, named outputs, DINO as a Method, Gen- hooks, backbone tokens."""

from __future__ import annotations

import pytest
import torch

from gensis.config import load_config
from gensis.errors import UserError
from gensis.models.backbone import build_backbone, forward_tokens
from gensis.ssl.disentangle_loss import disentanglement_loss
from gensis.ssl.methods import METHODS, build_method, method_class
from gensis.ssl.methods.base import Method, StepInfo, Views, run_backbone

TINY = ["data.image_size=16", "model.patch_size=4", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
        "dino.out_dim=16", "dino.hidden_dim=16", "dino.bottleneck_dim=8", "aug.n_local=2", "aug.local_size=8"]


def _views(b=3, extra=()):
    g = [torch.randn(b, 3, 16, 16) for _ in range(2)]
    loc = [torch.randn(b, 3, 8, 8) for _ in range(2)]
    return Views(g, loc, extra={name: torch.randn(b, 3, 16, 16) for name in extra})


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UserError, match="valid: dino"):
        method_class("dimo")
    assert all(issubclass(method_class(n), Method) and method_class(n).name == n for n in METHODS)


def test_cli_unknown_method_is_one_line(tmp_path, capsys):
    from gensis.cli.main import main

    assert main(["pretrain", "--method", "simclrr", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown method 'simclrr'" in err[0] and "dino" in err[0]
    assert main(["pretrain", "--out", str(tmp_path / "r"), "method=nope"]) == 2  # the config key, too
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_dino_named_outputs_and_loss():
    torch.manual_seed(0)
    m = build_method(load_config("pretrain", "smoke", TINY))
    assert m.view_spec().n_local == 2 and m.target == "distillation"
    v = _views(extra=("interp",))
    s = m.student(v)
    assert s["global"].shape == (2, 3, 16) and s["local"].shape == (2, 3, 16) and s["extra"]["interp"].shape == (3, 16)
    # extra views do not change the outputs of the regular views
    torch.testing.assert_close(s["global"], m.student(Views(v.global_views, v.local_views))["global"])
    t = m.teacher(Views(v.global_views))
    assert t["global"].shape == (2, 3, 16) and t["local"].shape[0] == 0
    sched = m.schedules(2, 3)
    info = StepInfo(0, 0, {k: float(a[0]) for k, a in sched.items()})
    center = m.dino_loss.center.clone()
    loss, parts = m.loss(s, t, info)
    assert loss.ndim == 0 and torch.isfinite(loss) and set(parts) == {"loss_dino"}
    assert not torch.equal(center, m.dino_loss.center)  # the center moved ...
    assert set(m.extra_state()) == {"dino_loss.center"}  # ... and is named for the checkpoint
    assert any(g.get("last_layer") for g in m.param_groups())


def test_distillation_target_is_the_dino_disentanglement_loss():
    from gensis.ssl.gen import GenViews  # noqa: F401  (module imports cleanly)
    from gensis.ssl.disentangle_loss import mix_teacher_outputs

    torch.manual_seed(1)
    m = build_method(load_config("pretrain", "smoke", TINY))
    m.dino_loss.center.normal_()
    s_int, t1, t2 = torch.randn(4, 16), torch.randn(4, 16), torch.randn(4, 16)
    alpha = torch.tensor([0.5, 0.2, 1.0, 0.0])
    info = StepInfo(0, 0, {"teacher_temp": 0.04})
    got = m.disentangle_distill(s_int, mix_teacher_outputs(t1, t2, alpha), info)
    want = disentanglement_loss(m.dino_loss, s_int, t1, t2, alpha, 0.04)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_forward_tokens_cls_patch_and_mask_token():
    torch.manual_seed(0)
    vit = build_backbone({"arch": "vit_tiny_patch16_224", "patch_size": 4, "embed_dim": 32, "depth": 1,
                          "num_heads": 2, "drop_path_rate": 0.0}, 16).eval()
    x = torch.randn(2, 3, 16, 16)
    tok = forward_tokens(vit, x)
    assert tok.cls.shape == (2, 32) and tok.patch.shape == (2, 16, 32)
    torch.testing.assert_close(tok.cls, vit(x))  # CLS = the representation every evaluation uses
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, :5] = True
    mt = torch.randn(32)
    masked = forward_tokens(vit, x, masks, mt)
    torch.testing.assert_close(masked.cls[1], tok.cls[1])  # unmasked image unchanged
    assert not torch.allclose(masked.cls[0], tok.cls[0])
    # mask token replaces the patch embedding: same result as feeding an image whose patches embed to it
    none = forward_tokens(vit, x, torch.zeros_like(masks), mt)
    torch.testing.assert_close(none.cls, tok.cls)
    # run_backbone batches equal sizes and splits back per crop
    outs = run_backbone(vit, [x, x[:1], torch.randn(2, 3, 8, 8)])
    assert [o.cls.shape[0] for o in outs] == [2, 1, 2] and outs[2].patch.shape == (2, 4, 32)
    torch.testing.assert_close(outs[1].cls, tok.cls[:1])


class _Contrastive(Method):
    """A stand-in contrastive method: records what the Gen- wrapper hands to its Eq. 8 hook."""

    name, target = "fake-contrastive", "contrastive"

    def __init__(self):
        super().__init__({})
        self.seen = None

    def disentangle_contrastive(self, f_int, f_real, i1, i2, alpha, step):
        from gensis.ssl.losses.gen_contrastive_loss import gen_contrastive_loss

        self.seen = (f_int, f_real, i1, i2, alpha)
        return gen_contrastive_loss(f_int, f_real, i1, i2, alpha, 0.1)


def test_gen_wrapper_contrastive_target_pairs_each_anchor_with_its_two_sources():
    from gensis.ssl.gen import GenViews

    b, k = 3, 5
    s_out = {"global": torch.randn(2, b, k), "local": torch.zeros(0, b, k),
             "extra": {"interp": torch.randn(b, k), "secondary": torch.randn(b, k)}}
    m = _Contrastive()
    alpha = torch.tensor([0.5, 1.0, 0.25])
    gen = GenViews.__new__(GenViews)  # only .loss is exercised: no data needed
    loss = gen.loss(m, s_out, None, alpha, StepInfo(0, 0))
    f_int, f_real, i1, i2, a = m.seen
    assert torch.equal(f_int, s_out["extra"]["interp"])
    assert torch.equal(f_real[i1], s_out["global"][0])  # I_1's feature: the first global view
    assert torch.equal(f_real[i2], s_out["extra"]["secondary"])  # I_2's feature: the extra view
    assert torch.equal(a, alpha) and torch.isfinite(loss)
