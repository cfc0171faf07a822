"""DDPM noise schedule of the denoiser: forward process q(x_t | x_0) and the training target.

Notation (Ho et al., 2020; Song et al., 2021)

    T            ``timesteps``                 number of training timesteps (1000, as latent diffusion)
    β_t          ``betas[t]``                  per-step noise variance
    ᾱ_t          ``alphas_cumprod[t]``         Π_{s≤t} (1 − β_s)
    x_t          ``add_noise(x0, ε, t)``        √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε
    target       ``target(x0, ε, t)``           ε (epsilon prediction) or v = √ᾱ_t · ε − √(1 − ᾱ_t) · x_0

The β table is taken from diffusers' ``DDPMScheduler`` for the same (schedule, β_start, β_end), so that our
sampler and diffusers' schedulers see exactly the same ᾱ_t. Latent diffusion's default ("linear" in the LDM
code, ``scaled_linear`` here: β_t = (linspace(√β_start, √β_end, T))², β from 0.0015 to 0.0195 for VQ-f4 models)
is the default of ``configs/eldm/base.yaml``; the paper does not state its schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gensis.errors import UserError

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTIONS = ("epsilon", "v_prediction")


@dataclass
class NoiseSchedule:
    betas: torch.Tensor  # (T,) float32
    alphas_cumprod: torch.Tensor  # (T,) float32
    prediction: str = "epsilon"
    beta_schedule: str = "scaled_linear"

    @property
    def timesteps(self) -> int:
        return len(self.betas)

    @classmethod
    def create(cls, timesteps: int = 1000, beta_schedule: str = "scaled_linear", beta_start: float = 0.0015,
               beta_end: float = 0.0195, prediction: str = "epsilon") -> "NoiseSchedule":
        if beta_schedule not in BETA_SCHEDULES:
            raise UserError(f"diffusion.beta_schedule must be one of {', '.join(BETA_SCHEDULES)}, got '{beta_schedule}'")
        if prediction not in PREDICTIONS:
            raise UserError(f"diffusion.prediction must be one of {', '.join(PREDICTIONS)}, got '{prediction}'")
        from diffusers import DDPMScheduler

        ref = DDPMScheduler(num_train_timesteps=timesteps, beta_schedule=beta_schedule, beta_start=beta_start,
                            beta_end=beta_end)
        return cls(ref.betas.float().clone(), ref.alphas_cumprod.float().clone(), prediction, beta_schedule)

    @classmethod
    def from_cfg(cls, d: dict) -> "NoiseSchedule":
        return cls.create(int(d["timesteps"]), d["beta_schedule"], float(d["beta_start"]), float(d["beta_end"]),
                          d["prediction"])

    def _coef(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.alphas_cumprod.to(like.device)[t.to(like.device)].to(like.dtype)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return a.sqrt().view(shape), (1 - a).sqrt().view(shape)  # √ᾱ_t, √(1−ᾱ_t), broadcast (B,1,1,1)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        sa, s1a = self._coef(t, x0)
        return sa * x0 + s1a * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction == "epsilon":
            return noise
        sa, s1a = self._coef(t, x0)
        return sa * noise - s1a * x0

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod.to(t.device)[t]
        return a / (1 - a)
