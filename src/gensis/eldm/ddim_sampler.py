"""Samplers of the E-LDM: our DDIM with classifier-free guidance in one batched call, and DPM-Solver++.

Paper (Sec. 9.5.1-2): DDIM [Song et al., 2021] with 50 steps and classifier-free guidance [Ho & Salimans,
2021] of scale w = 6 (natural images) or 1.75 (histopathology).

Notation

    x_t          ``x``                        current sample (latent or pixels), (B, C, H, W)
    t, t'        ``t``, ``t_prev``            current and next (smaller) timestep; t' = −1 means "done"
    ᾱ_t, ᾱ_t'    ``a_t``, ``a_prev``          cumulative products of the schedule; ᾱ_{−1} := 1
    c, ∅         ``ctx``, ``null_ctx``        projected condition (B, C) or (B, T, C) with T context tokens,
                                              and the learned null condition, one row of it: (C,) or (T, C)
    w            ``guidance``                 CFG scale; ε̃ = ε_∅ + w · (ε_c − ε_∅)   (w = 1: conditional only)
    η            ``eta``                      DDIM stochasticity (0: deterministic)
    σ_t          ``sigma``                    η · √((1 − ᾱ_t')/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_t')

One DDIM step (Song et al., Eq. 12 and 16; the same arithmetic as diffusers' ``DDIMScheduler.step``):

    1. model output → x̂_0 and ε̂   (ε-prediction: x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t;
                                     v-prediction: x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v̂, ε̂ = √ᾱ_t v̂ + √(1−ᾱ_t) x_t)
    2. optional clipping of x̂_0 to [−clip, clip] (pixel space), ε̂ re-derived from the clipped x̂_0
    3. x_t' = √ᾱ_t' · x̂_0 + √(1 − ᾱ_t' − σ_t²) · ε̂ + σ_t · z,   z ~ N(0, I) from the row's own generator

Determinism: the initial noise of row i is drawn from its own ``torch.Generator`` seeded with ``seeds[i]``
(on the CPU, so the same seed gives the same noise on any device), and so is any η-noise; a row's image
therefore depends only on its (embedding, seed), never on the other rows of the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from gensis.eldm.schedule import NoiseSchedule
from gensis.errors import UserError

# model(x (N,C,H,W), t (N,) long, ctx (N,Cc) or (N,T,Cc)) -> prediction (N,C,H,W)
DenoiseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

SAMPLERS = ("ddim", "dpmpp")
SPACINGS = ("leading", "trailing", "linspace")


def timestep_sequence(num_train: int, steps: int, spacing: str = "leading") -> list[int]:
    """Decreasing timesteps visited by the sampler (diffusers' ``set_timesteps`` conventions)."""
    if not 1 <= steps <= num_train:
        raise UserError(f"sampler steps must be in 1..{num_train}, got {steps}")
    if spacing == "leading":  # DDIM paper / diffusers default: 0, T/S, 2T/S, ... reversed
        ts = (np.arange(0, steps) * (num_train // steps)).round()[::-1]
    elif spacing == "trailing":  # starts at T−1 (Lin et al., 2024): better with few steps
        ts = np.round(np.arange(num_train, 0, -num_train / steps)) - 1
    elif spacing == "linspace":
        ts = np.linspace(0, num_train - 1, steps).round()[::-1]
    else:
        raise UserError(f"sampler spacing must be one of {', '.join(SPACINGS)}, got '{spacing}'")
    return [int(t) for t in ts]


def initial_noise(seeds: Sequence[int], shape: tuple[int, ...], device: torch.device | str = "cpu",
                  ) -> tuple[torch.Tensor, list[torch.Generator]]:
    """x_T: one N(0, I) tensor of ``shape`` per seed, each from its own CPU generator; (B, *shape)."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    x = torch.stack([torch.randn(shape, generator=g) for g in gens])  # (B, C, H, W)
    return x.to(device), gens


def guided_prediction(model: DenoiseFn, x: torch.Tensor, t: torch.Tensor, ctx: torch.Tensor,
                      null_ctx: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance, ε̃ = ε_∅ + w (ε_c − ε_∅), conditional and unconditional halves in ONE call.

    w = 1 is the conditional prediction alone and w = 0 the unconditional one (a single half-size call each).
    """
    b = x.shape[0]
    if guidance == 1.0:
        return model(x, t, ctx)
    null = null_ctx.to(ctx).expand(b, *null_ctx.shape)  # (B, Cc) or (B, T, Cc), as ctx
    if guidance == 0.0:
        return model(x, t, null)
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([ctx, null]))  # (2B, C, H, W)
    cond, uncond = out[:b], out[b:]
    return uncond + guidance * (cond - uncond)


@dataclass
class SamplerSettings:
    name: str = "ddim"  # ddim | dpmpp
    steps: int = 50
    guidance: float = 6.0
    eta: float = 0.0
    spacing: str = "leading"
    clip: float | None = None  # clip x̂_0 to [−clip, clip] (pixel space: 1.0); None: no clipping

    def check(self) -> "SamplerSettings":
        if self.name not in SAMPLERS:
            raise UserError(f"unknown sampler '{self.name}'; valid: {', '.join(SAMPLERS)}")
        if self.spacing not in SPACINGS:
            raise UserError(f"sampler spacing must be one of {', '.join(SPACINGS)}, got '{self.spacing}'")
        if not 0 <= self.guidance < math.inf:  # nan passed `< 0` and gave images of nan (black)
            raise UserError(f"guidance must be a number >= 0, got {self.guidance}")
        return self


class DDIMSampler:
    """Deterministic (η = 0) or stochastic DDIM over a ``NoiseSchedule`` (see module docstring)."""

    def __init__(self, schedule: NoiseSchedule, steps: int = 50, eta: float = 0.0, spacing: str = "leading",
                 clip: float | None = None):
        self.schedule, self.eta, self.clip = schedule, float(eta), clip
        self.timesteps = timestep_sequence(schedule.timesteps, steps, spacing)
        self.alphas_cumprod = schedule.alphas_cumprod.double()

    def _alpha(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def sigma(self, t: int, t_prev: int) -> float:
        a_t, a_prev = self._alpha(t), self._alpha(t_prev)
        return self.eta * ((1 - a_prev) / (1 - a_t)) ** 0.5 * (1 - a_t / a_prev) ** 0.5

    def step(self, out: torch.Tensor, t: int, t_prev: int, x: torch.Tensor,
             generators: Sequence[torch.Generator] | None = None, noise: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One update x_t → x_t'; returns (x_t', x̂_0). ``noise``: z for this step (else drawn from ``generators``)."""
        a_t, a_prev = self._alpha(t), self._alpha(t_prev)
        # 1. x̂_0 and ε̂ from the model output
        if self.schedule.prediction == "epsilon":
            x0 = (x - (1 - a_t) ** 0.5 * out) / a_t ** 0.5
            eps = out
        else:  # v-prediction
            x0 = a_t ** 0.5 * x - (1 - a_t) ** 0.5 * out
            eps = a_t ** 0.5 * out + (1 - a_t) ** 0.5 * x
        # 2. clipping (ε̂ re-derived from the clipped x̂_0, as GLIDE / diffusers)
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
            eps = (x - a_t ** 0.5 * x0) / (1 - a_t) ** 0.5
        # 3. Eq. 12 with σ_t of Eq. 16
        sigma = self.sigma(t, t_prev)
        x_prev = a_prev ** 0.5 * x0 + max(1 - a_prev - sigma ** 2, 0.0) ** 0.5 * eps
        if sigma > 0:
            if noise is None:
                if generators is None:
                    raise ValueError("eta > 0 needs one generator per row")
                noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])  # (B, C, H, W)
            x_prev = x_prev + sigma * noise.to(x)
        return x_prev, x0

    @torch.no_grad()
    def sample(self, model: DenoiseFn, x_T: torch.Tensor, ctx: torch.Tensor, null_ctx: torch.Tensor,
               guidance: float, generators: Sequence[torch.Generator] | None = None,
               callback: Callable[[int], None] | None = None) -> torch.Tensor:
        x = x_T
        ts = self.timesteps
        prev = ts[1:] + [-1]
        noisy = [i for i, (t, tp) in enumerate(zip(ts, prev)) if self.sigma(t, tp) > 0]
        z = None
        if noisy and generators is not None:
            # every step's η-noise drawn up front (row i's generator in step order: the same numbers as drawing
            # per step) and moved to the device once, not one blocking host→device copy per step
            z = torch.stack([torch.stack([torch.randn(x.shape[1:], generator=g) for _ in noisy])
                             for g in generators]).to(x.device)  # (B, n_noisy, C, H, W)
        for i, t in enumerate(ts):
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            out = guided_prediction(model, x, tt, ctx, null_ctx, guidance).to(x.dtype)
            zi = z[:, noisy.index(i)] if z is not None and i in noisy else None
            x, _ = self.step(out, t, prev[i], x, generators, zi)
            if callback is not None:
                callback(i)
        return x


class DPMSolverSampler:
    """DPM-Solver++ (2M) [Lu et al., 2022] from diffusers, on our schedule, with the same batched CFG.

    Multistep DPM-Solver++ is deterministic, so rows stay independent of each other. Pixel-space clipping
    uses diffusers' dynamic thresholding capped at ``clip`` (with ratio 0.995 this clamps x̂_0 to [−1, 1]).
    """

    def __init__(self, schedule: NoiseSchedule, steps: int = 20, spacing: str = "leading", clip: float | None = None,
                 order: int = 2):
        from diffusers import DPMSolverMultistepScheduler

        self.scheduler = DPMSolverMultistepScheduler(
            num_train_timesteps=schedule.timesteps, trained_betas=schedule.betas.numpy().tolist(),
            prediction_type=schedule.prediction, algorithm_type="dpmsolver++", solver_order=order,
            timestep_spacing=spacing, thresholding=clip is not None, sample_max_value=float(clip or 1.0),
            lower_order_final=True)
        self.steps = steps

    @torch.no_grad()
    def sample(self, model: DenoiseFn, x_T: torch.Tensor, ctx: torch.Tensor, null_ctx: torch.Tensor,
               guidance: float, generators=None, callback: Callable[[int], None] | None = None) -> torch.Tensor:
        sch = self.scheduler
        sch.set_timesteps(self.steps, device=x_T.device)
        x = x_T * sch.init_noise_sigma
        for i, t in enumerate(sch.timesteps):
            tt = t.expand(x.shape[0]).to(torch.long)
            out = guided_prediction(model, x, tt, ctx, null_ctx, guidance).to(x.dtype)
            x = sch.step(out, t, x).prev_sample
            if callback is not None:
                callback(i)
        return x


def make_sampler(schedule: NoiseSchedule, s: SamplerSettings) -> DDIMSampler | DPMSolverSampler:
    s.check()
    if s.name == "ddim":
        return DDIMSampler(schedule, s.steps, s.eta, s.spacing, s.clip)
    return DPMSolverSampler(schedule, s.steps, s.spacing, s.clip)
