"""The generator: per-row determinism, guidance, interpolation, and the bank's protocol."""

from __future__ import annotations

import pytest
import torch

from gensis.eldm.generator import EmbeddingConditionedGenerator, lerp, slerp


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
def test_same_embedding_and_seed_same_image_whatever_the_batch(make_generator, sampler):
    g = make_generator()
    e = torch.randn(5, 12)
    full = g.generate(e, [10, 11, 12, 13, 14], sampler=sampler)
    assert full.shape == (5, 3, 8, 8) and full.dtype == torch.uint8
    part = g.generate(e[[3, 1]], [13, 11], sampler=sampler)
    assert torch.equal(part, full[[3, 1]])
    single = g.generate(e[4:5], [14], sampler=sampler)
    assert torch.equal(single, full[4:5])


def test_chunking_does_not_change_rows(make_generator):
    g = make_generator()
    e = torch.randn(5, 12)
    a = g.generate(e, 7)  # int seed: rows use 7, 8, ...
    assert torch.equal(g.generate(e, [7, 8, 9, 10, 11]), a)
    big = torch.randn(40, 12)
    big[33] = e[2]
    assert torch.equal(g.generate(big, list(range(40)), steps=2)[33], g.generate(e[2:3], [33], steps=2)[0])


def test_eta_noise_is_per_row(make_generator):
    g = make_generator()
    e = torch.randn(3, 12)
    a = g.generate(e, [1, 2, 3], eta=1.0)
    assert torch.equal(g.generate(e[2:], [3], eta=1.0), a[2:])
    assert not torch.equal(a, g.generate(e, [1, 2, 3], eta=0.0))


def test_seeds_and_conditions_matter(make_generator):
    g = make_generator()
    e = torch.randn(2, 12)
    a = g.generate_float(e, [0, 0])
    assert not torch.equal(a[0], a[1])  # same noise, other condition
    b = g.generate_float(e[:1].expand(2, -1), [0, 1])
    assert not torch.equal(b[0], b[1])  # same condition, other noise


def test_guidance_one_equals_conditional_sampling(make_generator):
    """w = 1 must equal sampling with the conditional prediction alone (no unconditional half)."""
    from gensis.eldm.ddim_sampler import DDIMSampler, initial_noise

    g = make_generator()
    e = torch.randn(2, 12)
    ours = g.generate_float(e, [4, 5], guidance=1.0, steps=4)
    x_T, _ = initial_noise([4, 5], (3, 8, 8))
    c = g.denoiser.condition(e)
    def cond_model(x, t, _c):  # ignores the null half: every half is the conditional prediction
        return g.denoiser(x, t, c.repeat(len(x) // len(c), 1))

    cond_only = DDIMSampler(g.schedule, 4, clip=1.0).sample(cond_model, x_T, c, torch.zeros(16), guidance=7.0)
    assert torch.allclose(ours, cond_only.clamp(-1, 1), atol=1e-5)


def test_interpolation_endpoints(make_generator):
    g = make_generator()
    e1, e2 = torch.randn(2, 12), torch.randn(2, 12)
    for method in ("slerp", "lerp"):
        assert torch.equal(g.interpolate(e1, e2, 1.0, method, seeds=[3, 4]), g.generate(e1, [3, 4]))
        assert torch.equal(g.interpolate(e1, e2, 0.0, method, seeds=[3, 4]), g.generate(e2, [3, 4]))
    mid_s = g.interpolate(e1, e2, 0.5, "slerp", seeds=[3, 4])
    mid_l = g.interpolate(e1, e2, 0.5, "lerp", seeds=[3, 4])
    assert mid_s.shape == (2, 3, 8, 8)
    assert torch.allclose(g.generate(lerp(e1, e2, 0.5), [3, 4]).float(), mid_l.float())
    assert torch.equal(g.generate(slerp(e1, e2, 0.5), [3, 4]), mid_s)


def test_per_row_alpha(make_generator):
    g = make_generator()
    e1, e2 = torch.randn(1, 12).expand(3, -1), torch.randn(1, 12).expand(3, -1)
    out = g.interpolate(e1, e2, torch.tensor([1.0, 0.5, 0.0]), seeds=[9, 9, 9])
    assert torch.equal(out[0], g.generate(e1[:1], [9])[0]) and torch.equal(out[2], g.generate(e2[:1], [9])[0])


def test_unknown_interpolation_is_a_user_error(make_generator):
    from gensis.errors import UserError

    with pytest.raises(UserError, match="slerp"):
        make_generator().interpolate(torch.randn(1, 12), torch.randn(1, 12), 0.5, "cubic", seeds=[0])


@pytest.mark.parametrize("mode", ["cross_attn", "time", "both"])
def test_condition_modes_and_v_prediction(make_generator, mode):
    g = make_generator(mode=mode, prediction="v_prediction")
    assert isinstance(g, EmbeddingConditionedGenerator)
    out = g.generate(torch.randn(2, 12), [0, 1])
    assert out.shape == (2, 3, 8, 8)
    assert g.identity == make_generator(mode=mode, prediction="v_prediction").identity


def test_null_condition_is_used_for_dropped_rows(make_generator):
    g = make_generator()
    e = torch.randn(3, 12)
    c = g.denoiser.condition(e, torch.tensor([False, True, False]))
    assert torch.equal(c[1], g.denoiser.null_context) and not torch.equal(c[0], g.denoiser.null_context)
