"""Block masking: DINOv2's collate masks reproduced from the same seed, and ratio/shape properties."""

import random

import numpy as np
import pytest
import torch

from gensis.ssl.masking import MaskingGenerator, collate_masks, ibot_generator, ibot_masks, ibot_pred_ratio
from reference_vectors import load_reference


def test_collate_masks_reproduce_original_with_same_seed():
    ref = load_reference()
    section = ref["dinov2"]["ibot_patch_loss_centering"]
    cfg = section["config"]
    rng = random.Random(ref["meta"]["seed"])  # the original was driven by random.seed(SEED)
    side = int(round(cfg["n_tokens"] ** 0.5))
    gen = MaskingGenerator((side, side), max_num_patches=0.5 * cfg["n_tokens"])  # as dinov2 train.py
    for step in section["steps"]:
        x = step["inputs"]
        bm = collate_masks(cfg["n_images"], gen, cfg["mask_ratio_tuple"], cfg["mask_probability"], rng)
        np.testing.assert_array_equal(bm.masks.numpy(), np.array(x["collated_masks"], dtype=bool))
        np.testing.assert_array_equal(bm.mask_indices.numpy(), x["mask_indices_list"])
        np.testing.assert_allclose(bm.masks_weight.numpy(), x["masks_weight"], rtol=1e-6)
        assert bm.upperbound == x["upperbound"] and bm.n_masked == x["n_masked_patches"]


@pytest.mark.parametrize("grid", [(14, 14), (6, 6), (4, 7)])
def test_collate_masks_ratios_and_shapes(grid):
    rng = random.Random(0)
    n = grid[0] * grid[1]
    gen = MaskingGenerator(grid, max_num_patches=0.5 * n)
    lo, hi, p, n_images = 0.1, 0.5, 0.5, 16
    fractions = []
    for _ in range(20):
        bm = collate_masks(n_images, gen, (lo, hi), p, rng)
        assert bm.masks.shape == (n_images, n) and bm.masks.dtype == torch.bool
        counts = bm.masks.sum(1)
        assert int((counts > 0).sum()) <= int(n_images * p)  # exactly int(B·p) images get a nonzero target
        assert int((counts == 0).sum()) >= n_images - int(n_images * p)
        assert counts.max() <= int(n * hi)
        assert bm.n_masked == int(counts.sum()) <= bm.upperbound
        np.testing.assert_allclose(bm.masks_weight.numpy(), (1.0 / counts.clamp(min=1)).repeat_interleave(counts).numpy())
        fractions += (counts[counts > 0].float() / n).tolist()
    # stratified ratios U(probs[i], probs[i+1]) over [lo, hi]: the mean is near the middle (blocks may fall short)
    assert lo * 0.5 < np.mean(fractions) <= (lo + hi) / 2 + 0.05


def test_generator_masks_blocks_up_to_target():
    rng = random.Random(1)
    gen = MaskingGenerator((14, 14), max_num_patches=98)
    for target in (0, 10, 40, 80):
        m = gen(target, rng)
        assert m.shape == (14, 14) and m.sum() <= target
        if target:
            assert m.sum() >= 4  # at least one block of ≥ min_num_patches (4) tokens
    assert gen(0, rng).sum() == 0


def test_ibot_pred_ratio_recipe():
    rng = random.Random(0)
    ratios = np.array([ibot_pred_ratio([0.0, 0.3], [0.0, 0.2], rng=rng) for _ in range(2000)])
    assert 0.4 < np.mean(ratios == 0.0) < 0.6  # half the crops are not masked
    nz = ratios[ratios > 0]
    assert nz.min() >= 0.1 and nz.max() <= 0.5
    assert ibot_pred_ratio(0.3, 0.0, rng=rng) == 0.3
    assert ibot_pred_ratio(0.3, epoch=0, pred_start_epoch=2, rng=rng) == 0.0
    with pytest.raises(ValueError):
        ibot_pred_ratio(0.1, 0.2, rng=rng)


def test_ibot_masks_shapes_and_counts():
    rng = random.Random(3)
    masks = ibot_masks(64, (14, 14), rng=rng)
    assert masks.shape == (64, 14, 14) and masks.dtype == torch.bool
    counts = masks.flatten(1).sum(1)
    assert (counts == 0).any() and (counts > 0).any()
    assert counts.max() <= 0.5 * 196
    assert ibot_generator((14, 14)).min_num_patches == 16  # (14 // 3)²
