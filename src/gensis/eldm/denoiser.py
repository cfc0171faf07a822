"""The E-LDM denoiser: a diffusers ``UNet2DConditionModel`` trained from scratch, conditioned on the frozen
SSL encoder's embedding of the image (no text, no outside data).

    e (B, D)   encoder embedding (CLS of the teacher backbone)
      │  Conditioner: LayerNorm → Linear(D, C) → SiLU → Linear(C, T·C)            T = cond.tokens
      ▼
    c (B, C)      T = 1: one context token (exactly the layout before cond.tokens existed)
    c (B, T, C)   T > 1: reshaped to T tokens + a learned per-token position embedding P (T, C)
                  with probability p (training) c is replaced by the learned null embedding ∅, shaped as one
                  row of c: (C,) or (T, C)  (classifier-free guidance)
      ├── cross-attention context: the T tokens, (B, T, C)                          [mode cross_attn | both]
      └── added to the timestep embedding: Linear(C, T_emb)(c̄), c̄ = mean of the T tokens (c itself for
          T = 1), through the UNet's ``class_embed_type="identity"`` hook            [mode time | both]

With a single context token the cross-attention softmax weight is always 1, so cross-attention adds the same
(projected) vector at every position of each block: that is how the paper's latent-diffusion family
conditions, but it learns slowly; adding c to the timestep embedding (as class-conditional DDPMs / ADM do)
modulates every ResNet block instead. With T > 1 tokens each query position chooses its mix of the T tokens
(the softmax over T is no longer constant), at the cost of a (C, T·C) projection and T keys per attention.
``cond.mode=time`` with T > 1 is refused: without cross-attention only the mean token would be used.
``docs/eldm.md`` has the measured differences.
"""

from __future__ import annotations

import torch
from torch import nn

from gensis.errors import UserError

COND_MODES = ("cross_attn", "time", "both")


def check_tokens(tokens: int, mode: str) -> int:
    """``cond.tokens`` T: an int >= 1, and T > 1 only where cross-attention reads the tokens."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise UserError(f"cond.tokens={tokens}: must be an integer >= 1")
    if tokens > 1 and mode == "time":
        raise UserError(f"cond.tokens={tokens} needs cross-attention to read the tokens: with cond.mode=time only "
                        "their mean is used; set cond.mode=cross_attn or both, or cond.tokens=1")
    return tokens


class Conditioner(nn.Module):
    """e (B, D) → c: (B, C) for one token, (B, T, C) for T > 1 tokens; rows with ``drop`` set get the learned
    null embedding ∅ ((C,) or (T, C)) instead."""

    def __init__(self, emb_dim: int, width: int, tokens: int = 1):
        super().__init__()
        self.tokens, self.width = int(tokens), int(width)
        self.proj = nn.Sequential(nn.LayerNorm(emb_dim, elementwise_affine=False), nn.Linear(emb_dim, width),
                                  nn.SiLU(), nn.Linear(width, self.tokens * width))
        shape = (width,) if self.tokens == 1 else (self.tokens, width)
        self.null = nn.Parameter(torch.randn(shape) * 0.02)  # ∅
        # P: learned per-token position embedding (T > 1 only, so that T = 1 keeps its parameters and RNG draws)
        self.pos = nn.Parameter(torch.randn(self.tokens, width) * 0.02) if self.tokens > 1 else None

    def forward(self, e: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        c = self.proj(e.float())  # (B, T·C)
        if self.pos is not None:
            c = c.view(len(c), self.tokens, self.width) + self.pos.to(c.dtype)  # (B, T·C) → (B, T, C)
        if drop is not None:
            mask = drop.view(-1, *([1] * (c.ndim - 1)))  # (B, 1) or (B, 1, 1)
            c = torch.where(mask, self.null.to(c.dtype).expand_as(c), c)
        return c


def unet_kwargs(u: dict, channels: int, sample_size: int, context: int, mode: str) -> dict:
    """diffusers ``UNet2DConditionModel`` arguments from the ``unet`` config section."""
    levels = list(u["block_out_channels"])
    attn = list(u["attention"])
    if len(attn) != len(levels):
        raise UserError(f"unet.attention needs one true/false per level ({len(levels)}), got {attn}")
    if mode == "cross_attn" and not (any(attn) or u["mid_attention"]):
        raise UserError("cond.mode=cross_attn needs cross-attention somewhere (unet.attention or unet.mid_attention)")
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
    return dict(
        sample_size=sample_size, in_channels=channels, out_channels=channels,
        down_block_types=tuple(down), up_block_types=tuple(up),
        mid_block_type="UNetMidBlock2DCrossAttn" if u["mid_attention"] else None,
        block_out_channels=tuple(levels), layers_per_block=int(u["layers_per_block"]),
        cross_attention_dim=context, attention_head_dim=int(u["attention_head_dim"]),
        norm_num_groups=int(u["norm_num_groups"]),
        class_embed_type="identity" if mode in ("time", "both") else None,
    )


class Denoiser(nn.Module):
    """UNet + conditioner. ``forward(x_t, t, c)`` takes the *projected* condition c (or ∅) so that the sampler
    can batch conditional and unconditional halves; ``condition(e, drop)`` computes c from embeddings."""

    def __init__(self, emb_dim: int, channels: int, sample_size: int, unet_cfg: dict, context: int,
                 mode: str = "both", tokens: int = 1):
        super().__init__()
        if mode not in COND_MODES:
            raise UserError(f"cond.mode must be one of {', '.join(COND_MODES)}, got '{mode}'")
        from diffusers import UNet2DConditionModel

        self.mode = mode
        self.tokens = check_tokens(tokens, mode)
        self.conditioner = Conditioner(emb_dim, context, self.tokens)
        self.unet = UNet2DConditionModel(**unet_kwargs(unet_cfg, channels, sample_size, context, mode))
        temb = self.unet.time_embedding.linear_2.out_features
        self.to_time = nn.Linear(context, temb) if mode in ("time", "both") else None

    def condition(self, e: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """e (B, D) → c, (B, C) for one token or (B, T, C) (``Conditioner``)."""
        return self.conditioner(e, drop)

    @property
    def null_context(self) -> torch.Tensor:
        """∅, shaped as one row of ``condition``'s output: (C,) or (T, C)."""
        return self.conditioner.null

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor | None = None, *,
                emb: torch.Tensor | None = None, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Prediction for x_t at timesteps t given c (sampling) or given embeddings + drop mask (training,
        so that DDP sees every parameter used inside one ``forward``)."""
        if c is None:
            c = self.condition(emb, drop)  # (B, C) or (B, T, C)
        ctx, pooled = context_tokens(c)
        ctx = ctx.to(x.dtype)
        if self.mode == "time":  # any cross-attention blocks see a constant token
            ctx = torch.zeros_like(ctx)
        class_labels = self.to_time(pooled) if self.to_time is not None else None  # (B, T_emb)
        return self.unet(x, t, encoder_hidden_states=ctx, class_labels=class_labels).sample


def context_tokens(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """c → (cross-attention context (B, T, C), the time path's input (B, C)): one token c[:, None, :] and c
    itself when c is (B, C); the T tokens and their mean when c is (B, T, C)."""
    if c.ndim == 2:
        return c[:, None, :], c  # (B, C) → (B, 1, C): a single context token
    return c, c.mean(dim=1)  # (B, T, C), mean over the T tokens (B, C)


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
