"""ViT backbones through timm, built from configs (never downloaded).

``model.arch`` is any timm ViT name (``vit_small_patch16_224``, ``vit_tiny_patch16_224`` ...); the
optional ``patch_size``/``embed_dim``/``depth``/``num_heads`` keys override the named architecture, which
is how the small CPU presets are made. ``dynamic_img_size=True`` makes timm interpolate the position
embeddings, so global and local crops of different sizes go through the same model in one step.
The representation used downstream is the CLS token after the final norm (``forward`` with
``num_classes=0``, ``global_pool='token'``), as in DINO.
"""

from __future__ import annotations

import os

import timm
import torch
from torch import nn

from gensis.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_OVERRIDES = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "drop_path_rate")


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


@torch.no_grad()
def patch_tokens(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, N, D) normalized patch tokens (for dense evaluations)."""
    tokens = model.forward_features(x)  # (B, prefix + N, D)
    return tokens[:, getattr(model, "num_prefix_tokens", 1):]
