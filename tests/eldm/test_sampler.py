"""DDIM, classifier-free guidance and the noise schedule, checked against diffusers and by hand."""

from __future__ import annotations

import pytest
import torch

from gensis.eldm.ddim_sampler import (DDIMSampler, DPMSolverSampler, guided_prediction, initial_noise,
                                      timestep_sequence)
from gensis.eldm.schedule import NoiseSchedule


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_schedule_matches_diffusers(schedule):
    from diffusers import DDIMScheduler

    ours = NoiseSchedule.create(1000, schedule, 0.0015, 0.0195)
    ref = DDIMScheduler(num_train_timesteps=1000, beta_schedule=schedule, beta_start=0.0015, beta_end=0.0195)
    assert torch.equal(ours.alphas_cumprod, ref.alphas_cumprod.float())
    x0, noise, t = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5), torch.tensor([0, 10, 500, 999])
    assert torch.allclose(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t), atol=1e-6)


def test_v_target_matches_diffusers():
    from diffusers import DDPMScheduler

    ours = NoiseSchedule.create(1000, "linear", 1e-4, 0.02, "v_prediction")
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="v_prediction")
    x0, noise, t = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.tensor([1, 300, 998])
    assert torch.allclose(ours.target(x0, noise, t), ref.get_velocity(x0, noise, t), atol=1e-6)


@pytest.mark.parametrize("spacing,steps", [("leading", 50), ("leading", 7), ("trailing", 50), ("trailing", 10),
                                           ("linspace", 13)])
def test_timesteps_match_diffusers(spacing, steps):
    from diffusers import DDIMScheduler

    ref = DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    ref.set_timesteps(steps)
    assert timestep_sequence(1000, steps, spacing) == ref.timesteps.tolist()


def _toy_model(x, t, c):
    """A deterministic stand-in denoiser: depends on x, t and the condition."""
    return torch.tanh(0.5 * x + c.mean(1).view(-1, 1, 1, 1)) * (1 + t.float().view(-1, 1, 1, 1) / 1000)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("clip", [None, 1.0])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_loop_equals_diffusers(prediction, clip, spacing):
    """eta=0: our full sampling loop equals diffusers' DDIMScheduler (set_alpha_to_one, no offset)."""
    from diffusers import DDIMScheduler

    sched = NoiseSchedule.create(1000, "scaled_linear", 0.0015, 0.0195, prediction)
    ref = DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195,
                        prediction_type=prediction, clip_sample=clip is not None, clip_sample_range=clip or 1.0,
                        timestep_spacing=spacing, set_alpha_to_one=True)
    steps = 10
    ref.set_timesteps(steps)
    x_T = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(3, 4)
    ours = DDIMSampler(sched, steps, 0.0, spacing, clip).sample(_toy_model, x_T, ctx, torch.zeros(4), guidance=1.0)
    x = x_T.clone()
    for t in ref.timesteps:
        out = _toy_model(x, t.expand(3), ctx)
        x = ref.step(out, t, x, eta=0.0, use_clipped_model_output=clip is not None).prev_sample
    assert torch.allclose(ours, x, atol=1e-5), (ours - x).abs().max()


def test_ddim_eta_step_equals_diffusers():
    """eta>0: one stochastic step equals diffusers' with the same variance noise."""
    from diffusers import DDIMScheduler

    sched = NoiseSchedule.create(1000, "linear", 1e-4, 0.02)
    ref = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    ref.set_timesteps(20)
    sampler = DDIMSampler(sched, 20, eta=0.7)
    x, out = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    gens = [torch.Generator().manual_seed(s) for s in (5, 6)]
    z = torch.stack([torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(s)) for s in (5, 6)])
    t, t_prev = sampler.timesteps[3], sampler.timesteps[4]
    ours, _ = sampler.step(out, t, t_prev, x, gens)
    theirs = ref.step(out, t, x, eta=0.7, variance_noise=z).prev_sample
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_guidance_one_is_conditional_and_zero_unconditional():
    x, t = torch.randn(3, 2, 4, 4), torch.full((3,), 500)
    ctx, null = torch.randn(3, 5), torch.randn(5)
    assert torch.equal(guided_prediction(_toy_model, x, t, ctx, null, 1.0), _toy_model(x, t, ctx))
    assert torch.equal(guided_prediction(_toy_model, x, t, ctx, null, 0.0), _toy_model(x, t, null.expand(3, -1)))


def test_guidance_batches_both_halves_in_one_call():
    calls = []

    def model(x, t, c):
        calls.append(len(x))
        return _toy_model(x, t, c)

    x, t = torch.randn(3, 2, 4, 4), torch.full((3,), 500)
    ctx, null = torch.randn(3, 5), torch.randn(5)
    w = 6.0
    out = guided_prediction(model, x, t, ctx, null, w)
    assert calls == [6]  # one call, conditional and unconditional halves together
    cond, uncond = _toy_model(x, t, ctx), _toy_model(x, t, null.expand(3, -1))
    assert torch.allclose(out, uncond + w * (cond - uncond), atol=1e-6)


def test_initial_noise_is_per_row():
    a, _ = initial_noise([3, 4, 5], (2, 4, 4))
    b, _ = initial_noise([5, 3], (2, 4, 4))
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])


def test_dpmpp_runs_and_is_deterministic():
    sched = NoiseSchedule.create(1000, "scaled_linear", 0.0015, 0.0195)
    x_T = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    ctx, null = torch.randn(2, 3), torch.zeros(3)
    a = DPMSolverSampler(sched, 8).sample(_toy_model, x_T, ctx, null, 2.0)
    b = DPMSolverSampler(sched, 8).sample(_toy_model, x_T, ctx, null, 2.0)
    assert a.shape == x_T.shape and torch.isfinite(a).all() and torch.equal(a, b)
