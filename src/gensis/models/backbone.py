"""ViT backbones through timm, built from configs (never downloaded).

``model.arch`` is any timm ViT name (``vit_small_patch16_224``, ``vit_tiny_patch16_224`` ...); the
optional ``patch_size``/``embed_dim``/``depth``/``num_heads`` keys override the named architecture, which
is how the small CPU presets are made; ``init_values`` adds LayerScale (a learnable per-channel gain, timm's
``ls1.gamma``/``ls2.gamma``) to every block, DINOv2's ``layerscale: 1e-5``. ``conv_stem`` (a list of channel counts, empty by default)
puts early convolutions before the patch embedding (``ConvStemPatchEmbed``). ``init`` picks what is done
after timm's initialisation (``INITS``, '+'-joined: ``mimetic`` attention weights, ``sincos`` position embeddings). ``dynamic_img_size=True`` makes timm interpolate the position
embeddings, so global and local crops of different sizes go through the same model in one step.
The representation used downstream is the CLS token after the final norm (``forward`` with
``num_classes=0``, ``global_pool='token'``), as in DINO.

The feature interface every trainer and evaluation uses is ``forward_tokens(model, x)``: the CLS token and
the patch tokens after the final norm (timm's ``forward_features`` split into its two parts), with an
optional boolean patch mask whose patches are replaced by a learnable mask token before the position
embedding (iBOT's and DINOv2's masked image modeling). The mask token belongs to the method (it is not
part of the exported backbone), so backbones saved by any method load into a plain ``build_backbone``.
"""

from __future__ import annotations

import math

import timm
import torch
from dataclasses import dataclass
from functools import partial

from timm.layers import LayerNorm2d, PatchEmbed

from torch import nn

from gensis.errors import UserError

_OVERRIDES = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "drop_path_rate", "init_values")


class ConvStemPatchEmbed(PatchEmbed):
    """timm's ``PatchEmbed`` after a stack of 3×3 stride-1 convolutions (each conv → LayerNorm2d → GELU).

    Early convolutions give a ViT a convolutional inductive bias that makes it train faster and more stably
    from scratch on small data (Xiao et al., "Early Convolutions Help Transformers See Better", NeurIPS 2021,
    whose stem uses stride-2 3×3 convs with BatchNorm; Hassani et al.'s Compact Convolutional Transformers
    tokenise CIFAR with convs the same way). Here the convolutions keep the resolution, so the token grid is
    exactly that of the plain patch embedding (H/p × W/p) for any patch size and crop size, and the patchify
    projection then reads ``channels[-1]`` channels instead of 3. The norm is per pixel over channels
    (ConvNeXt's LayerNorm2d), so a view's tokens do not depend on the rest of its batch (no BatchNorm
    statistics to synchronise under DDP or to keep apart between student and EMA teacher).
    """

    def __init__(self, *args, channels: tuple[int, ...] = (32,), in_chans: int = 3, **kwargs) -> None:
        super().__init__(*args, in_chans=channels[-1], **kwargs)
        layers: list[nn.Module] = []
        c_in = in_chans
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), LayerNorm2d(c), nn.GELU()]
            c_in = c
        self.stem = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.stem(x))  # (B, 3, H, W) -> (B, C, H, W) -> timm's patchify


def _low_rank_factors(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` (d, d) = L @ R with L = U·√S and R = √S·Vᵀ from its SVD (so L[:, :k] @ R[:k] is its best rank-k part)."""
    u, s, vh = torch.linalg.svd(a)
    root = s.sqrt()
    return u * root, root[:, None] * vh


def _noise_plus_identity(d: int, alpha: float, beta: float, gen: torch.Generator) -> torch.Tensor:
    """alpha·Z + beta·I with Z (d, d) uniform of variance 1/d (the mimetic initialisation's target product)."""
    bound = math.sqrt(3.0 / d)
    z = (torch.rand(d, d, generator=gen) * 2 - 1) * bound  # (d, d), Var = 1/d
    return alpha * z + beta * torch.eye(d)


@torch.no_grad()
def mimetic_init_(model: nn.Module, qk: tuple[float, float] = (0.7, 0.7), vo: tuple[float, float] = (0.4, 0.4),
                  gen: torch.Generator | None = None) -> nn.Module:
    """Mimetic initialisation of every timm attention block (Trockman & Kolter, "Mimetic Initialization of
    Self-Attention Layers", ICML 2023): the weights start so that, per head, W_qᵀ·W_k ≈ α₁Z + β₁I and, over all
    heads, W_o·W_v ≈ α₂Z − β₂I (Z random with variance 1/d, I the identity), the structure the attention layers of
    large pretrained ViTs show. With W_qᵀW_k near the identity a token attends to the tokens that look like it,
    which through the position embeddings means its neighbours, so a ViT starts with a convolution-like locality
    instead of near-uniform attention; the paper reports +5 points for a ViT-Tiny trained from scratch on CIFAR-10.
    (α₁, β₁) = (0.7, 0.7) and (α₂, β₂) = (0.4, 0.4) are the paper's. Each head's query/key weights are the
    best rank-d_head factors of its own draw; only the attention weights change (biases, MLPs and the rest keep
    timm's initialisation). ``gen``: the generator of the draws (default: torch's global one)."""
    for m in model.modules():
        qkv, proj = getattr(m, "qkv", None), getattr(m, "proj", None)
        if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and hasattr(m, "num_heads")):
            continue
        d = qkv.in_features
        h = int(m.num_heads)
        k = d // h
        w = qkv.weight  # (3d, d): rows [q (h heads of k) | k (h heads) | v]
        for i in range(h):
            left, right = _low_rank_factors(_noise_plus_identity(d, *qk, gen))
            w[i * k:(i + 1) * k] = left[:, :k].T  # W_q of head i (k, d)
            w[d + i * k:d + (i + 1) * k] = right[:k]  # W_k of head i (k, d): W_qᵀ W_k = L[:, :k] R[:k]
        left, right = _low_rank_factors(_noise_plus_identity(d, vo[0], -vo[1], gen))
        w[2 * d:] = right  # W_v (d, d)
        proj.weight.copy_(left)  # W_o (d, d): W_o W_v = alpha2 Z - beta2 I
    return model


@torch.no_grad()
def sincos_pos_init_(model: nn.Module, temperature: float = 10000.0, scale: float = 1.0) -> nn.Module:
    """Start the learnable position embeddings of a timm ViT at the fixed 2D sine-cosine embedding (MoCo v3 and
    MAE use it, fixed, because a learned one from trunc-normal(0.02) carries no geometry at first; here it stays
    learnable). The class token's position entry (when it has one) is set to zero. ``temperature`` is the
    table's longest wavelength (10,000 in MoCo v3, MAE and timm, made for long sequences: on a 4x4 grid nearly
    all its frequencies are too low to tell positions apart); ``scale`` multiplies the table (1: MoCo v3's)."""
    pos = getattr(model, "pos_embed", None)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if pos is None or grid is None:
        return model
    from timm.layers import build_sincos2d_pos_embed

    n = int(grid[0]) * int(grid[1])
    table = scale * build_sincos2d_pos_embed(list(grid), pos.shape[-1], temperature=temperature)  # (N, D)
    pos.zero_()
    pos[0, pos.shape[1] - n:] = table.to(pos.dtype)  # the prefix (class token) rows come first
    return model


def _pair(value: object, default: tuple[float, float]) -> tuple[float, float]:
    return default if value is None else (float(value[0]), float(value[1]))  # type: ignore[index]


# model.init: '+'-joined names of what is done after timm's own initialisation (in that order); each reads its
# own keys of the model config (model.mimetic_qk / mimetic_vo, model.sincos_temperature / sincos_scale)
INITS = {
    "timm": lambda model, cfg: model,
    "mimetic": lambda model, cfg: mimetic_init_(model, qk=_pair(cfg.get("mimetic_qk"), (0.7, 0.7)),
                                                vo=_pair(cfg.get("mimetic_vo"), (0.4, 0.4))),
    "sincos": lambda model, cfg: sincos_pos_init_(model, temperature=float(cfg.get("sincos_temperature") or 10000.0),
                                                  scale=float(cfg.get("sincos_scale", 1.0))),
}


def check_arch(arch: str) -> str:
    """``model.arch`` must name a timm model: a one-line ``UserError`` with a few close names otherwise."""
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:5]
        raise UserError(f"unknown backbone '{arch}' (timm has e.g. {', '.join(close) or 'vit_small_patch16_224'})")
    return arch


def build_backbone(model_cfg: dict, img_size: int) -> nn.Module:
    """Create a randomly initialised timm ViT whose ``forward`` returns the CLS embedding (B, D)."""
    arch = check_arch(model_cfg["arch"])
    kwargs = {k: model_cfg[k] for k in _OVERRIDES if model_cfg.get(k) is not None}
    if model_cfg.get("conv_stem"):
        kwargs["embed_layer"] = partial(ConvStemPatchEmbed, channels=tuple(int(c) for c in model_cfg["conv_stem"]))
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="token",
                                  img_size=img_size, dynamic_img_size=True, **kwargs)
    except TypeError as e:
        raise UserError(f"backbone '{arch}' does not accept these settings ({e}); use a ViT") from None
    except AssertionError as e:  # timm's own checks, e.g. "dim should be divisible by num_heads"
        given = ", ".join(f"model.{k}={v}" for k, v in kwargs.items() if k in ("embed_dim", "num_heads", "patch_size"))
        hint = "; model.embed_dim must be a multiple of model.num_heads" if "num_heads" in str(e) else ""
        raise UserError(f"backbone '{arch}' cannot be built with {given or 'these settings'}: {e}{hint}") from None
    for name in str(model_cfg.get("init", "timm")).split("+"):
        model = INITS[name](model, model_cfg)
    return model


def set_fused_attention(model: nn.Module, fused: bool) -> nn.Module:
    """How every timm attention block of ``model`` computes softmax(q·kᵀ/√d)·v: torch's fused
    ``scaled_dot_product_attention`` (``fused=True``, timm's default) or timm's explicit matmul, softmax, matmul.
    The same function (equal up to rounding), so the choice is not saved with the weights; only speed differs."""
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused
    return model


def fused_attention_for_training(device: torch.device, bf16: bool) -> bool:
    """Whether a ViT that is *trained* on ``device`` (under bf16 autocast or not) should use the fused attention
    kernel: yes, except on the CPU under bf16, where the backward of torch's flash attention for CPU is 2-4×
    slower than the explicit form (5-257 tokens) and a whole demo pretraining step took 0.8× the time with the
    explicit form (``benchmarks/bench_cpu_attention.py``; in fp32 the two cost the same, so fp32 keeps the
    fused kernel). Forward-only uses (evaluation, features) keep timm's default: there the two cost the same."""
    return not (device.type == "cpu" and bf16)


def patch_size_of(model_cfg: dict) -> int | None:
    """The patch size a config's backbone will have, read without building it: ``model.patch_size`` or the
    ``patchN`` in the timm name (None when neither says)."""
    import re

    if model_cfg.get("patch_size") is not None:
        return int(model_cfg["patch_size"])
    m = re.search(r"patch(\d+)", str(model_cfg.get("arch", "")))
    return int(m.group(1)) if m else None


def model_patch_size(model: nn.Module) -> int | None:
    """The patch size of a built timm ViT (None when it has no patch embedding)."""
    ps = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if ps is None:
        return None
    return int(ps[0] if isinstance(ps, (tuple, list)) else ps)


def check_patch_multiple(sizes: dict[str, int], patch: int | None) -> None:
    """Every crop size (``{"data.image_size": 224, "aug.local_size": 96}``) must be a multiple of the ViT's
    patch size: a one-line ``UserError`` naming the key, instead of timm's assertion at the first step."""
    if not patch:
        return
    for key, size in sizes.items():
        if int(size) % patch:
            lo, hi = (int(size) // patch) * patch, (int(size) // patch + 1) * patch
            near = f"{lo} or {hi}" if lo > 0 else f"{hi}"
            raise UserError(f"{key}={size} is not a multiple of the ViT's patch size {patch} (model.patch_size / "
                            f"model.arch): use e.g. {near}")


def embed_dim(model: nn.Module) -> int:
    return int(getattr(model, "num_features", getattr(model, "embed_dim")))


@dataclass
class Tokens:
    """Backbone outputs after the final norm: ``cls`` (B, D) and ``patch`` (B, N, D), N = (H/p)·(W/p)."""

    cls: torch.Tensor
    patch: torch.Tensor


def forward_tokens(model: nn.Module, x: torch.Tensor, masks: torch.Tensor | None = None,
                   mask_token: torch.Tensor | None = None) -> Tokens:
    """CLS + patch tokens of a timm ViT; ``masks`` (B, N) bool replaces those patches by ``mask_token`` (D,).

    Without masks this is exactly ``model.forward_features`` (so ``.cls`` equals ``model(x)``).
    """
    if masks is None:
        tokens = model.forward_features(x)  # (B, prefix + N, D)
    else:
        if mask_token is None:
            raise ValueError("masks given without a mask_token")
        p = model.patch_embed(x)  # (B, h, w, D) with dynamic_img_size, else (B, N, D)
        m = masks.view(*p.shape[:-1], 1)  # (B, h, w, 1) or (B, N, 1)
        p = torch.where(m, mask_token.to(p.dtype).view(*([1] * (p.dim() - 1)), -1), p)
        tokens = model._pos_embed(p)  # (B, prefix + N, D)
        tokens = model.norm_pre(model.patch_drop(tokens))
        tokens = model.norm(model.blocks(tokens))
    prefix = getattr(model, "num_prefix_tokens", 1)
    return Tokens(cls=tokens[:, 0], patch=tokens[:, prefix:])


@torch.no_grad()
def patch_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, N, D) normalized patch tokens (for dense evaluations)."""
    return forward_tokens(model, x).patch
