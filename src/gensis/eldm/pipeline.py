"""The E-LDM as a diffusers pipeline: ``EmbeddingConditionedPipeline`` (embeddings in, images out).

``gensis export ELDM_RUN --to diffusers OUT`` writes diffusers' own ``save_pretrained`` layout::

    OUT/model_index.json       the pipeline: unet, scheduler, conditioner, vqvae
    OUT/unet/                  UNet2DConditionModel (config.json + diffusion_pytorch_model.safetensors)
    OUT/vqvae/                 VQModel (latent space runs only; pixel-space runs have none)
    OUT/scheduler/             DDIMScheduler on the run's noise schedule (spacing, clipping, prediction type)
    OUT/conditioner/           EmbeddingConditioner: embedding → UNet inputs (below), with the run's settings
    OUT/encoder/               the conditioning encoder as a timm folder (``timm.create_model("local-dir:...")``)

The conditioner, in plain torch (``conditioner/diffusion_pytorch_model.safetensors``; config in ``config.json``)::

    c   = proj.3(silu(proj.1(layer_norm(e))))      # e (B, D) encoder embedding → c (B, T·C); no affine LayerNorm
    T = tokens == 1 (config.json):
    ∅   = null                                     # (C,), the learned "no condition" used for guidance
    encoder_hidden_states = c[:, None, :]          # (B, 1, C), zeros when mode == "time"
    class_labels          = to_time(c)             # (B, T_emb), only when mode is "time" or "both"
    T = tokens > 1 (mode "cross_attn" or "both"):
    c   = c.view(B, T, C) + pos                    # (B, T·C) → (B, T, C): T tokens + position embedding pos (T, C)
    ∅   = null                                     # (T, C)
    encoder_hidden_states = c                      # (B, T, C)
    class_labels          = to_time(c.mean(1))     # (B, T_emb), only when mode is "both"
    latents → images: vqvae.decode(z / latent_scale) (VQ runs) or pixel_shuffle(z, pixel_patch) (pixel runs)

Classifier-free guidance: ε̃ = ε(∅) + w · (ε(c) − ε(∅)); each step is ``scheduler.step(ε̃, t, x,
use_clipped_model_output=True)`` (pixel runs clip x̂_0 to [−1, 1] and re-derive ε̂ from it). The initial noise
of row i is ``torch.randn(latent_shape, generator=torch.Generator().manual_seed(seeds[i]))``, as gensis' own sampler, so
the same (embedding, seed, steps, guidance) gives the same image as ``gensis.eldm.load_generator(...).generate``.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from torch import nn

COND_MODES = ("cross_attn", "time", "both")


class EmbeddingConditioner(ModelMixin, ConfigMixin):  # type: ignore[misc]
    """Encoder embedding → the UNet's ``encoder_hidden_states`` and ``class_labels`` (see module docstring)."""

    @register_to_config  # type: ignore[untyped-decorator]
    def __init__(self, emb_dim: int, context_dim: int, time_embed_dim: int | None = None, mode: str = "both",
                 image_size: int = 256, latent_channels: int = 3, latent_size: int = 64, latent_scale: float = 1.0,
                 pixel_patch: int = 1, space: str = "vq", guidance: float = 6.0, num_inference_steps: int = 50,
                 encoder_identity: str = "", weights_identity: str = "", tokens: int = 1):
        super().__init__()
        if mode not in COND_MODES:
            raise ValueError(f"mode must be one of {COND_MODES}, got {mode!r}")
        if tokens < 1 or (tokens > 1 and mode == "time"):
            raise ValueError(f"tokens must be >= 1 (and 1 with mode 'time'), got {tokens}")
        self.tokens, self.context_dim = int(tokens), int(context_dim)
        self.proj = nn.Sequential(nn.LayerNorm(emb_dim, elementwise_affine=False), nn.Linear(emb_dim, context_dim),
                                  nn.SiLU(), nn.Linear(context_dim, self.tokens * context_dim))
        self.null = nn.Parameter(torch.zeros(context_dim) if self.tokens == 1 else torch.zeros(self.tokens, context_dim))
        self.pos = nn.Parameter(torch.zeros(self.tokens, context_dim)) if self.tokens > 1 else None
        with_time = time_embed_dim is not None and mode in ("time", "both")
        self.to_time = nn.Linear(context_dim, int(time_embed_dim or 0)) if with_time else None

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """e (B, D) → c: (B, C) for one token, (B, T, C) for T > 1 tokens."""
        c: torch.Tensor = self.proj(embeddings.float())  # (B, T·C)
        if self.pos is not None:
            c = c.view(len(c), self.tokens, self.context_dim) + self.pos  # (B, T·C) → (B, T, C)
        return c

    def unet_inputs(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """c (B, C) or (B, T, C) → (encoder_hidden_states (B, T, C) (T = 1 for (B, C)), class_labels (B, T_emb)
        or None): the time path reads c, or the mean of the T tokens."""
        ctx, pooled = (c[:, None, :], c) if c.ndim == 2 else (c, c.mean(dim=1))  # (B, 1, C) or (B, T, C); (B, C)
        if self.config.mode == "time":
            ctx = torch.zeros_like(ctx)
        return ctx, (self.to_time(pooled) if self.to_time is not None else None)


class EmbeddingConditionedPipeline(DiffusionPipeline):  # type: ignore[misc]
    """Generate images from encoder embeddings with an exported E-LDM.

        pipe = EmbeddingConditionedPipeline.from_pretrained("export/eldm")
        images = pipe(embeddings, seeds=[0, 1], num_inference_steps=50, guidance_scale=6.0).images  # PIL
        x = pipe(embeddings, seeds=[0, 1], output_type="pt").images      # float (B, 3, S, S) in [0, 1]
    """

    model_cpu_offload_seq = "conditioner->unet->vqvae"
    _optional_components = ["vqvae"]

    def __init__(self, unet: Any, scheduler: Any, conditioner: EmbeddingConditioner, vqvae: Any = None):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, conditioner=conditioner, vqvae=vqvae)

    def _predict(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ctx, class_labels = self.conditioner.unet_inputs(c)
        out = self.unet(x, t, encoder_hidden_states=ctx.to(x.dtype), class_labels=class_labels)
        pred: torch.Tensor = out.sample.float()
        return pred

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) → float images in [−1, 1] (B, 3, S, S)."""
        cfg = self.conditioner.config
        if self.vqvae is not None:
            x: torch.Tensor = self.vqvae.decode(z / cfg.latent_scale).sample.float()
            return x
        p = int(cfg.pixel_patch)
        return z if p == 1 else nn.functional.pixel_shuffle(z, p)  # (B, 3, S, S)

    def initial_noise(self, seeds: Sequence[int]) -> torch.Tensor:
        """x_T (B, C, h, w): row i from its own CPU generator seeded with ``seeds[i]`` (as gensis' sampler)."""
        cfg = self.conditioner.config
        shape = (int(cfg.latent_channels), int(cfg.latent_size), int(cfg.latent_size))
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])

    @torch.no_grad()
    def __call__(self, embeddings: torch.Tensor | np.ndarray, seeds: Sequence[int] | int = 0,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None, eta: float = 0.0,
                 output_type: str = "pil", return_dict: bool = True) -> ImagePipelineOutput | tuple[Any]:
        """Images for embeddings (B, D), one seed per row (an int s means s, s+1, ...).

        ``output_type``: ``pil`` (list of PIL images), ``np`` (float (B, S, S, 3) in [0, 1]), ``pt`` (float
        (B, 3, S, S) in [0, 1]) or ``uint8`` (uint8 (B, 3, S, S), as gensis' ``generate``).
        """
        cfg = self.conditioner.config
        dev = self.unet.device
        e = torch.as_tensor(embeddings).float().to(dev)
        if e.ndim != 2:
            raise ValueError(f"embeddings must be (B, D), got shape {tuple(e.shape)}")
        seed_list = [seeds + i for i in range(len(e))] if isinstance(seeds, int) else [int(s) for s in seeds]
        if len(seed_list) != len(e):
            raise ValueError(f"{len(e)} embeddings but {len(seed_list)} seeds")
        w = float(cfg.guidance if guidance_scale is None else guidance_scale)
        steps = int(cfg.num_inference_steps if num_inference_steps is None else num_inference_steps)
        gens = [torch.Generator().manual_seed(s) for s in seed_list]
        for g in gens:  # advance past x_T, exactly as gensis' sampler does before any η-noise
            torch.randn((int(cfg.latent_channels), int(cfg.latent_size), int(cfg.latent_size)), generator=g)
        x = self.initial_noise(seed_list).to(dev)
        c = self.conditioner(e)  # (B, C) or (B, T, C)
        null = self.conditioner.null.to(c).expand_as(c)  # (B, C) or (B, T, C)
        sch = self.scheduler
        sch.set_timesteps(steps, device=dev)
        x = x * sch.init_noise_sigma
        params = inspect.signature(sch.step).parameters
        step_kw: dict[str, Any] = {"eta": eta} if "eta" in params else {}
        if "use_clipped_model_output" in params:  # ε̂ re-derived from the clipped x̂_0, as gensis' DDIM (GLIDE)
            step_kw["use_clipped_model_output"] = True
        if eta > 0:
            step_kw["variance_noise"] = torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens]).to(x)
        b = len(e)
        for t in self.progress_bar(sch.timesteps):
            tt = t.expand(b).to(dev)
            if w == 1.0:
                out = self._predict(x, tt, c)
            elif w == 0.0:
                out = self._predict(x, tt, null)
            else:  # conditional and unconditional halves in one call
                both = self._predict(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([c, null]))
                out = both[b:] + w * (both[:b] - both[b:])
            x = sch.step(out.to(x.dtype), t, x, **step_kw).prev_sample
            if eta > 0:
                step_kw["variance_noise"] = torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens]).to(x)
        images = self.decode_latents(x.float()).clamp(-1, 1)  # (B, 3, S, S) in [−1, 1]
        result: Any
        if output_type == "uint8":
            result = images.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()
        elif output_type == "pt":
            result = images.add(1).div(2).cpu()
        else:
            arr = images.add(1).div(2).permute(0, 2, 3, 1).cpu().numpy()  # (B, S, S, 3)
            result = self.numpy_to_pil(arr) if output_type == "pil" else arr
        if not return_dict:
            return (result,)
        return ImagePipelineOutput(images=result)
