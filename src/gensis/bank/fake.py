"""A tiny deterministic stand-in generator, for tests and benchmarks of the bank without a trained E-LDM.

``FakeGenerator`` implements ``EmbeddingConditionedGenerator``: ``encode`` is the mean colour plus a fixed random
projection of a 4×4 thumbnail; ``generate`` paints the embedding's colour over noise drawn from a per-row
``torch.Generator`` seeded with the row's seed, so the output of a row never depends on the batch it is in.
Cost knobs emulate a real sampler: ``work`` (CPU smoothing passes per image) and ``delay`` (seconds slept per
image: time the CPU waits for a GPU). Neither changes the output nor the identity.

Command line: ``gensis bank generate --generator gensis.bank.fake:FakeGenerator [--eldm params.json]`` where the
optional JSON holds keyword arguments (``{"image_size": 16, "dim": 8, "delay": 0.01}``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from gensis.errors import UserError


class FakeGenerator:
    def __init__(self, eldm: str | None = None, device: str = "cpu", guidance: float | None = None,
                 steps: int | None = None, sampler: str | None = None, *, image_size: int = 16, dim: int = 8,
                 delay: float = 0.0, work: int = 0, fail_on_rank: int | None = None):
        params = {}
        if eldm is not None and Path(eldm).is_file():
            params = json.loads(Path(eldm).read_text())
        self.image_size = int(params.get("image_size", image_size))
        self.dim = int(params.get("dim", dim))
        self.delay = float(params.get("delay", delay))
        self.work = int(params.get("work", work))
        self.fail_on_rank = params.get("fail_on_rank", fail_on_rank)
        self.default_guidance = guidance if guidance is not None else 2.0
        self.default_steps = steps if steps is not None else 4
        self.default_sampler = sampler or "ddim"
        g = torch.Generator().manual_seed(1234)
        self.proj = torch.randn(3 * 16, max(self.dim - 3, 0), generator=g, dtype=torch.float64) / 4.0  # (48, D-3)

    @property
    def identity(self) -> str:
        blob = f"fake-v1|{self.image_size}|{self.dim}|{self.default_guidance}|{self.default_steps}|{self.default_sampler}"
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def encoder_identity(self) -> str:
        return hashlib.sha256(f"fake-encoder-v1|{self.dim}".encode()).hexdigest()[:16]

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → float32 (B, D): [mean colour in 0..1, projection of a 4×4 thumbnail]."""
        out = []
        for x in images:  # one row at a time: batch-invariant
            x = x.to("cpu", torch.float64)[None] / 255.0                 # (1, 3, H, W)
            mean = x.mean(dim=(2, 3))[0]                                  # (3,)
            thumb = F.adaptive_avg_pool2d(x, 4).flatten()                 # (48,)
            out.append(torch.cat([mean, thumb @ self.proj]).float()[: self.dim])
        return torch.stack(out) if out else torch.zeros(0, self.dim)

    def generate(self, embeddings: torch.Tensor, seeds: Sequence[int], guidance: float | None = None,
                 steps: int | None = None, sampler: str | None = None) -> torch.Tensor:
        """float (B, D) + one seed per row → uint8 (B, 3, S, S)."""
        guidance = self.default_guidance if guidance is None else guidance
        steps = self.default_steps if steps is None else steps
        if self.fail_on_rank is not None and int(os.environ.get("RANK", "0")) == int(self.fail_on_rank):
            raise UserError(f"fake generator: injected failure on rank {self.fail_on_rank}")
        s = self.image_size
        if self.delay:
            time.sleep(self.delay * len(seeds))
        out = []
        for e, seed in zip(embeddings.to("cpu", torch.float64), seeds):
            gen = torch.Generator().manual_seed(int(seed))
            noise = torch.rand(3, s, s, generator=gen, dtype=torch.float64)     # (3, S, S)
            colour = e[:3].clamp(0, 1).view(3, 1, 1)                              # (3, 1, 1)
            ramp = torch.linspace(0, 1, s, dtype=torch.float64).view(1, 1, s)     # horizontal ramp from the embedding
            tint = torch.tanh(e[3:6].sum()) if len(e) > 3 else torch.tensor(0.0, dtype=torch.float64)
            w = 0.35 / (1.0 + 0.1 * float(guidance) + 0.01 * int(steps))  # noise share
            img = (1 - w) * colour + w * noise + 0.3 * tint * (ramp - 0.5)
            scratch = img[None]
            for _ in range(self.work):  # emulated sampler cost: computed, then thrown away
                scratch = F.avg_pool2d(scratch, 3, 1, 1, count_include_pad=False)
            out.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        return torch.stack(out) if out else torch.zeros(0, 3, s, s, dtype=torch.uint8)
