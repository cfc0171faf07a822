"""ViT backbones through timm, built from configs (never downloaded).

``model.arch`` is any timm ViT name (``vit_small_patch16_224``, ``vit_tiny_patch16_224`` ...); the
optional ``patch_size``/``embed_dim``/``depth``/``num_heads`` keys override the named architecture, which
is how the small CPU presets are made; ``init_values`` adds LayerScale (a learnable per-channel gain, timm's
``ls1.gamma``/``ls2.gamma``) to every block, DINOv2's ``layerscale: 1e-5``. ``dynamic_img_size=True`` makes timm interpolate the position
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

import os

import timm
import torch
from dataclasses import dataclass

from torch import nn

from gensis.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_OVERRIDES = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "drop_path_rate", "init_values")


def build_backbone(model_cfg: dict, img_size: int) -> nn.Module:
    """Create a randomly initialised timm ViT whose ``forward`` returns the CLS embedding (B, D)."""
    arch = model_cfg["arch"]
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:5]
        raise UserError(f"unknown backbone '{arch}' (timm has e.g. {', '.join(close) or 'vit_small_patch16_224'})")
    kwargs = {k: model_cfg[k] for k in _OVERRIDES if model_cfg.get(k) is not None}
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="token",
                                  img_size=img_size, dynamic_img_size=True, **kwargs)
    except TypeError as e:
        raise UserError(f"backbone '{arch}' does not accept these settings ({e}); use a ViT") from None
    return model


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
