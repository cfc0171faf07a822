"""A throw-away bank adapter for one measurement of docs/eldm.md ("Starting from the source image instead of from
noise (SDEdit; session 23)"); not part of gensis, and it reaches into ``gensis.bank.generate``'s internals.

Each bank entry starts from its source's latent noised to t = s*T (interpolations: the latent of the pixel blend
alpha*img1 + (1-alpha)*img2) and is denoised under its conditioning (DDIM, the last s*steps of ``SD_STEPS``):

    SD_STRENGTH=0.5 SD_STEPS=20 PYTHONPATH=benchmarks gensis bank generate --generator sdedit_adapter:factory \\
        --eldm ELDM --data DATA --out BANK --preset demo gen.seed=0 run.threads=1

Only for a fresh bank folder in one process (it looks the entries' images up from the plan of the shard being
generated, which ``conditioning`` and ``embed_shards`` are wrapped to record).
"""

import os
import numpy as np
import torch
import gensis.bank.generate as BG
from gensis.eldm import load_generator
from gensis.eldm.ddim_sampler import DDIMSampler
from gensis.eldm.autoencoder import to_uint8

STRENGTH = float(os.environ.get("SD_STRENGTH", "0.5"))
STEPS = int(os.environ.get("SD_STEPS", "20"))
INIT = os.environ.get("SD_INIT", "pixel")  # interp init: pixel blend or latent blend
ST = {}

_cond = BG.conditioning
def conditioning(plan, store, interpolation):
    c = _cond(plan, store, interpolation)
    ST["plan"] = plan
    ST["seed_row"] = {int(s): i for i, s in enumerate(plan.seed)}
    return c
BG.conditioning = conditioning

_embed = BG.embed_shards
def embed_shards(gen, ds, *a, **k):
    ST["ds"] = ds
    return _embed(gen, ds, *a, **k)
BG.embed_shards = embed_shards


class SD:
    def __init__(self, g):
        self.g = g
        self.image_size = g.image_size
        self.micro_batch = g.micro_batch

    @property
    def identity(self):
        return f"sdedit-{STRENGTH}-{STEPS}-{INIT}-" + self.g.identity

    @property
    def encoder_identity(self):
        return self.g.encoder_identity

    def encode(self, images):
        return self.g.encode(images)

    def _images(self, idx):
        return next(BG.image_batches(ST["ds"], [np.asarray(idx)], self.image_size)).float() / 127.5 - 1

    @torch.no_grad()
    def generate(self, e, seeds, guidance=None, steps=None, sampler=None):
        plan = ST["plan"]
        rows = np.array([ST["seed_row"][int(s)] for s in seeds])
        prim = plan.primary[rows]
        x1 = self._images(prim)
        kind = plan.kind[rows]
        g = self.g
        ae = g.autoencoder
        z0 = ae.encode(x1)
        if (kind == 1).any():
            m = kind == 1
            a = torch.from_numpy(plan.alpha[rows][m].astype(np.float32)).view(-1, 1, 1, 1)
            x2 = self._images(plan.secondary[rows][m])
            if INIT == "pixel":
                z0[torch.from_numpy(m)] = ae.encode(a * x1[m] + (1 - a) * x2)
            else:
                z0[torch.from_numpy(m)] = a * z0[torch.from_numpy(m)] + (1 - a) * ae.encode(x2)
        s = g.settings(guidance, STEPS, "ddim")
        smp = DDIMSampler(g.schedule, STEPS, 0.0, s.spacing, s.clip)
        T = g.schedule.timesteps
        smp.timesteps = [t for t in smp.timesteps if t < STRENGTH * T]
        t0 = smp.timesteps[0]
        gens = [torch.Generator().manual_seed(int(sd)) for sd in seeds]
        noise = torch.stack([torch.randn(z0.shape[1:], generator=gg) for gg in gens])
        xt = g.schedule.add_noise(z0, noise, torch.full((len(z0),), t0, dtype=torch.long))
        ctx = g.denoiser.condition(torch.as_tensor(e).float())
        z = smp.sample(g._model, xt, ctx.float(), g.denoiser.null_context.float(), s.guidance, gens)
        x = ae.decode(z.float()).float().clamp(-1, 1)
        return to_uint8(x)


def factory(eldm, device="cpu", guidance=None, steps=None, sampler=None):
    return SD(load_generator(eldm, device=device, guidance=guidance))
