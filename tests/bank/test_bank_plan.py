"""Seeds and secondaries are pure functions; the layout maps (image, slot) to (shard, row)."""

import numpy as np
import pytest

from gensis.bank.plan import KIND_GEN, KIND_INTERP, Layout, entry_seeds, plan_shard, secondaries, slot_code, splitmix64
from gensis.errors import UserError


def test_splitmix64_reference_value():
    # SplitMix64 of state 0 (Vigna's splitmix64.c: first output for seed 0)
    assert int(splitmix64(np.array([0], np.uint64))[0]) == 0xE220A8397B1DCDAF


def test_seeds_pure_distinct_and_63_bit():
    i = np.arange(1000)
    a = entry_seeds(0, i, slot_code(KIND_GEN, 0))
    assert np.array_equal(a, entry_seeds(0, i, slot_code(KIND_GEN, 0)))
    b = entry_seeds(0, i, slot_code(KIND_GEN, 1))
    c = entry_seeds(0, i, slot_code(KIND_INTERP, alpha=0.5))
    d = entry_seeds(1, i, slot_code(KIND_GEN, 0))
    assert len(np.unique(np.concatenate([a, b, c, d]))) == 4000
    assert int(np.concatenate([a, b, c, d]).max()) < 2**63
    # one entry at a time = all at once
    assert int(entry_seeds(0, np.array([7]), slot_code(KIND_GEN, 0))[0]) == int(a[7])


def test_random_secondary_never_self_and_covers_dataset():
    n = 50
    sec = secondaries(3, np.arange(n), n)
    assert np.all(sec != np.arange(n)) and sec.min() >= 0 and sec.max() < n
    many = secondaries(3, np.repeat(np.arange(n), 1), n)
    assert np.array_equal(sec, many)
    wide = np.concatenate([secondaries(s, np.arange(n), n) for s in range(200)])
    counts = np.bincount(wide, minlength=n)
    assert counts.min() > 0.6 * counts.mean()  # roughly uniform
    assert np.array_equal(secondaries(3, np.arange(10, 20), n), sec[10:20])  # independent of the query set


def test_group_secondary_from_another_group():
    groups = np.array([0] * 5 + [1] * 3 + [2] * 12)
    rng = np.random.default_rng(0)
    groups = groups[rng.permutation(len(groups))]
    for seed in range(20):
        sec = secondaries(seed, np.arange(len(groups)), len(groups), groups)
        assert np.all(groups[sec] != groups)
    with pytest.raises(UserError, match="at least 2 groups"):
        secondaries(0, np.arange(4), 4, np.zeros(4, int))


def test_layout_locate_and_nearest_alpha():
    lay = Layout(num_images=35, num_generative=2, alphas=(0.2, 0.8), shard_size=16)
    assert lay.num_shards == 3 and lay.entries_per_image == 4 and lay.shard_range(2) == (32, 35)
    shard, row = lay.locate(np.array([0, 17, 34]), np.array([1, 2, 3]))
    assert shard.tolist() == [0, 1, 2] and row.tolist() == [1, 1 * 4 + 2, 2 * 4 + 3]
    assert lay.alpha_slot(np.array([0.0, 0.45, 0.55, 1.0])).tolist() == [2, 2, 3, 3]
    with pytest.raises(IndexError):
        lay.locate(np.array([35]), np.array([0]))


def test_plan_rows_match_layout():
    lay = Layout(num_images=35, num_generative=2, alphas=(0.5,), shard_size=16)
    p = plan_shard(lay, 1, 0, None)
    assert len(p) == 16 * 3 and p.primary[:3].tolist() == [16, 16, 16]
    assert p.kind[:3].tolist() == [0, 0, 1] and p.k[:3].tolist() == [0, 1, 0]
    assert np.isnan(p.alpha[0]) and p.alpha[2] == np.float32(0.5) and p.secondary[0] == -1
    _, row = lay.locate(np.array([20]), np.array([2]))
    assert p.primary[row[0]] == 20 and p.kind[row[0]] == KIND_INTERP
