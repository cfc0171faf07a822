"""DINOv2's DINO, iBOT-patch and KoLeo losses and its CosineScheduler against facebookresearch/dinov2's outputs."""

import numpy as np
import pytest
import torch

from gensis.ssl.losses.centering import sinkhorn_knopp
from gensis.ssl.losses.dinov2_dino_loss import DINOv2DINOLoss
from gensis.ssl.losses.dinov2_ibot_patch_loss import DINOv2iBOTPatchLoss, masks_weight_of
from gensis.ssl.losses.koleo_loss import KoLeoLoss, nearest_neighbor_index
from gensis.ssl.schedules import CosineScheduler, cosine_schedule
from reference_vectors import load_reference

REF = load_reference()["dinov2"]
TOL = dict(rtol=1e-5, atol=1e-7)


def f32(x):
    return torch.from_numpy(np.array(x, np.float32))


def dino_inputs(section, i):
    x = REF[section]["steps"][i]["inputs"]
    return x if "same_as" not in x else REF["dino_loss_centering"]["steps"][i]["inputs"]


@pytest.mark.parametrize("centering", ["centering", "sinkhorn_knopp"])
def test_dino_cls_loss_matches_original(centering):
    section = "dino_loss_centering" if centering == "centering" else "dino_loss_sinkhorn"
    ref = REF[section]
    cfg = ref["config"]
    loss_fn = DINOv2DINOLoss(cfg["out_dim"], cfg["student_temp"], cfg["center_momentum"], centering=centering,
                             sinkhorn_iterations=ref.get("n_iterations", 3))
    for i, step in enumerate(ref["steps"]):
        x = dino_inputs(section, i)
        natural = f32(x["teacher_cls_after_head_natural_order"])  # (2B, K)
        # the original passes the chunk-swapped rows to the loss; the targets are row-wise, so either order works
        np.testing.assert_array_equal(f32(x["teacher_output"]), torch.cat(natural.chunk(2)[::-1]))
        if centering == "centering":
            np.testing.assert_allclose(loss_fn.center.center.numpy(), step["center_buffer_before_call"], **TOL)
        targets = loss_fn.teacher_targets(natural, x["teacher_temp"]).view(2, cfg["B"], -1)  # (2, B, K)
        if centering == "centering":
            np.testing.assert_allclose(loss_fn.center.center.numpy(), step["outputs"]["center_used"], **TOL)
        swapped = torch.stack((targets[1], targets[0]))
        np.testing.assert_allclose(swapped.numpy(), step["outputs"]["teacher_targets"], **TOL)
        s_global, s_local = f32(x["student_global_cls_after_head"]), f32(x["student_local_cls_after_head"])
        raw_local = loss_fn(list(s_local.chunk(cfg["n_local_crops"])), list(swapped))
        raw_global = loss_fn([s_global], [torch.cat((targets[1], targets[0]))])
        assert raw_local.item() == pytest.approx(step["outputs"]["loss_local_raw"], rel=1e-5)
        assert raw_global.item() == pytest.approx(step["outputs"]["loss_global_raw"], rel=1e-5)
        terms = loss_fn.multicrop_terms(s_global, s_local, targets)
        assert terms["local"].item() == pytest.approx(step["outputs"]["dino_local_crops_loss"], rel=1e-5)
        assert terms["global"].item() == pytest.approx(step["outputs"]["dino_global_crops_loss"], rel=1e-5)
    if centering == "centering":
        loss_fn.center.apply_pending()
        np.testing.assert_allclose(loss_fn.center.center.numpy(), ref["center_final_after_apply"], **TOL)


def test_lazy_center_is_applied_before_saving():
    loss_fn = DINOv2DINOLoss(3, center_momentum=0.5, centering="centering")
    loss_fn.teacher_targets(torch.tensor([[2.0, 0.0, -2.0]]), 0.1)
    assert torch.equal(loss_fn.center.center, torch.zeros(1, 3))  # lazy: not yet applied
    state = loss_fn.state_dict()
    np.testing.assert_allclose(state["center.center"].numpy(), [[1.0, 0.0, -1.0]])


@pytest.mark.parametrize("centering", ["centering", "sinkhorn_knopp"])
def test_ibot_patch_loss_matches_original(centering):
    section = "ibot_patch_loss_centering" if centering == "centering" else "ibot_patch_loss_sinkhorn"
    ref = REF[section]
    cfg = ref["config"]
    loss_fn = DINOv2iBOTPatchLoss(cfg["patch_out_dim"], cfg["student_temp"], cfg["center_momentum"],
                                  centering=centering, sinkhorn_iterations=ref.get("n_iterations", 3))
    for i, step in enumerate(ref["steps"]):
        x = step["inputs"] if "same_as" not in step["inputs"] else REF["ibot_patch_loss_centering"]["steps"][i]["inputs"]
        masks = torch.tensor(x["collated_masks"], dtype=torch.bool)  # (8, 16)
        np.testing.assert_array_equal(masks.flatten().nonzero().flatten().numpy(), x["mask_indices_list"])
        np.testing.assert_allclose(masks_weight_of(masks).numpy(), x["masks_weight"], **TOL)
        if centering == "centering":
            np.testing.assert_allclose(loss_fn.center.center.numpy(), step["center_buffer_before_call"], **TOL)
        targets = loss_fn.teacher_targets(f32(x["teacher_patch_tokens_after_head_masked"]), x["teacher_temp"])
        if centering == "centering":
            np.testing.assert_allclose(loss_fn.center.center.numpy(), step["outputs"]["center_used"], **TOL)
        np.testing.assert_allclose(targets.numpy(), step["outputs"]["teacher_targets"], **TOL)
        s = f32(x["student_patch_tokens_after_head_masked"])
        got = loss_fn.forward_masked(s, targets, masks, masks_weight=f32(x["masks_weight"]))
        assert got.item() == pytest.approx(step["outputs"]["forward_masked"], rel=1e-5)
        assert (got * 2 * 0.5).item() == pytest.approx(step["outputs"]["ibot_patch_loss"], rel=1e-5)
        assert (got * 2 * 0.5 / 2).item() == pytest.approx(step["outputs"]["loss_dict_ibot_loss"], rel=1e-5)
        if "forward_masked_default_masks_weight" in step["outputs"]:
            default = loss_fn.forward_masked(s, targets, masks)
            assert default.item() == pytest.approx(step["outputs"]["forward_masked_default_masks_weight"], rel=1e-5)
        # the dense form on (B, N, K) tokens gives the same value
        dense_s = torch.zeros(*masks.shape, s.shape[-1])
        dense_t = torch.full_like(dense_s, 1.0 / s.shape[-1])
        dense_s[masks], dense_t[masks] = s, targets
        assert loss_fn(dense_s, dense_t, masks).item() == pytest.approx(got.item(), rel=1e-5)
    if centering == "centering":
        loss_fn.center.apply_pending()
        np.testing.assert_allclose(loss_fn.center.center.numpy(), ref["center_final_after_apply"], **TOL)


def test_sinkhorn_rows_are_distributions_and_columns_balanced():
    torch.manual_seed(0)
    q = sinkhorn_knopp(torch.randn(32, 8), 0.1, n_iterations=50)
    np.testing.assert_allclose(q.sum(1).numpy(), np.ones(32), rtol=1e-5)
    np.testing.assert_allclose(q.sum(0).numpy(), np.full(8, 32 / 8), rtol=1e-3)  # each prototype gets B/K


def test_koleo_matches_original():
    ref = REF["koleo"]
    x = f32(ref["single"]["inputs"]["x"])
    assert KoLeoLoss()(x).item() == pytest.approx(ref["single"]["outputs"]["loss"], rel=1e-5)
    idx = nearest_neighbor_index(torch.nn.functional.normalize(x, dim=-1))
    np.testing.assert_array_equal(idx.numpy(), ref["single"]["outputs"]["nn_index"])
    assert idx[1] == 4 and idx[4] == 1  # the near-duplicate rows are each other's neighbour
    m = ref["meta_arch"]
    tokens = f32(m["inputs"]["student_global_cls_tokens"])
    koleo = m["inputs"]["koleo_loss_weight"] * sum(KoLeoLoss()(p) for p in tokens.chunk(2))
    assert koleo.item() == pytest.approx(m["outputs"]["koleo_loss"], rel=1e-5)
    assert (koleo / 2).item() == pytest.approx(m["outputs"]["loss_dict_koleo_loss"], rel=1e-5)


def test_koleo_pushes_close_points_apart():
    x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]], requires_grad=True)
    KoLeoLoss()(x).backward()
    # gradient descent moves row 1 away from row 0: the angle of row 1 grows
    moved = x.detach() - 0.01 * x.grad
    assert torch.atan2(moved[1, 1], moved[1, 0]) > torch.atan2(x[1, 1], x[1, 0])


@pytest.mark.parametrize("i", range(len(REF["cosine_schedulers"]["dinov2_CosineScheduler"])))
def test_dinov2_cosine_scheduler_matches_original(i):
    c = REF["cosine_schedulers"]["dinov2_CosineScheduler"][i]
    s = CosineScheduler(**c["kwargs"])
    np.testing.assert_allclose(s.schedule, c["schedule"], rtol=1e-11)
    np.testing.assert_allclose([s[it] for it in c["getitem_iters"]], c["getitem_values"], rtol=1e-11)


@pytest.mark.parametrize("i", range(len(REF["cosine_schedulers"]["dino_ibot_cosine_scheduler"])))
def test_dino_ibot_cosine_scheduler_matches_original(i):
    c = REF["cosine_schedulers"]["dino_ibot_cosine_scheduler"][i]
    np.testing.assert_allclose(cosine_schedule(**c["kwargs"]), c["schedule"], rtol=1e-11)
