"""iBOT (Zhou et al., ICLR 2022, "iBOT: Image BERT Pre-Training with Online Tokenizer") as a ``Method``.

    student: ViT (+ learnable mask token) + iBOT head on 2 global crops (block-masked) + n_local local crops
    teacher: EMA copy on the 2 unmasked global crops: the online tokenizer of the masked patches
    loss   = λ_1 · L_[CLS] (DINO between crops) + λ_2 · L_MIM (masked patch tokens, same crop)
             (``gensis.ssl.losses.ibot_loss.iBOTLoss``, with its two centers and two temperature schedules)

Masks: each global crop of each image gets its own ratio (``pred_ratio`` ± ``pred_ratio_var``, a list is a
choice between entries, so [0, 0.3] ± [0, 0.2] leaves half the crops unmasked) and BEiT-style block masks
(``gensis.ssl.masking.ibot_masks``). The mask token replaces the masked patch embeddings before the position
embedding (iBOT's ``masked_embed``, shape (1, D), zero-initialised).

Head (``iBOTHead``): DINO's MLP + weight-normalised last layer for the CLS token; the patch tokens go through
the same MLP and either the same last layer (``shared_head``, the ViT-S/16 recipe) or their own ``last_layer2``.
The iBOT code gives the teacher a shared head by default (``shared_head_teacher``); here both share or
neither does, so the teacher stays an exact EMA copy of the student.

Schedules as ``main_ibot.py``: teacher momentum cosine from ``momentum_teacher`` to 1 per iteration; teacher
temperatures per epoch (linear warm-up then constant, the patch one delayed by ``pred_start_epoch``, which is
0 here as in every published recipe). Gen-iBOT: disentanglement at the CLS output only, through the CLS
centering and sharpening (center read, not updated); the MIM term is untouched.

Option beyond iBOT, off by default: ``ibot.koleo_loss_weight`` adds DINOv2's KoLeo term on the student's
backbone CLS of each (masked) global crop, as DINOv2 does (``gensis.ssl.losses.koleo_loss``).

Reference: bytedance/ibot ``main_ibot.py`` (train loop, ``iBOTLoss``), ``models/head.py`` (``iBOTHead``),
``loader.py`` (``ImageFolderMask``), ``models/vision_transformer.py`` (``masked_embed``).
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from gensis.errors import UserError
from gensis.models.backbone import build_backbone, embed_dim
from gensis.models.dino_head import DINOHead
from gensis.ssl.losses.ibot_loss import iBOTLoss, ibot_temperature_schedules
from gensis.ssl.losses.koleo_loss import KoLeoLoss, koleo_over_crops
from gensis.ssl.masking import ibot_masks
from gensis.ssl.methods.base import (Method, StepInfo, Views, ViewSpec, default_param_groups, run_backbone,
                                     student_and_teacher)
from gensis.ssl.schedules import cosine_schedule


class iBOTHead(nn.Module):  # noqa: N801 (the original's name)
    """DINO head for the CLS token; the same MLP and a (shared or own) last layer for patch tokens."""

    def __init__(self, in_dim: int, out_dim: int, patch_out_dim: int, hidden_dim: int, bottleneck_dim: int,
                 norm_last_layer: bool, shared_head: bool):
        super().__init__()
        self.dino = DINOHead(in_dim, out_dim, hidden_dim, bottleneck_dim, norm_last_layer=norm_last_layer)
        self.shared = shared_head
        if not shared_head:
            self.last_layer2 = weight_norm(nn.Linear(bottleneck_dim, patch_out_dim, bias=False))
            g = self.last_layer2.parametrizations.weight.original0
            with torch.no_grad():
                g.fill_(1.0)
            g.requires_grad_(not norm_last_layer)

    def last_layers(self) -> list[nn.Parameter]:
        layers = [self.dino.last_layer] + ([] if self.shared else [self.last_layer2])
        return [p for m in layers for p in m.parameters()]

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.dino(cls)  # (B, K)

    def patch(self, tokens: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.dino.mlp(tokens), dim=-1, p=2)  # (..., bottleneck)
        return (self.dino.last_layer if self.shared else self.last_layer2)(z)  # (..., K2)


class iBOTNet(nn.Module):  # noqa: N801
    """Backbone + mask token + iBOT head. ``forward(views)`` → {"global": (n_g, B, K), "local": (n_l, B, K),
    "extra": {name: (B, K)}} and the patch-head outputs of the global views: with masks (the student)
    "global_patch_masked" (n, K2) at the n masked tokens only (row-major order of ``masks``), the only ones its
    loss reads, and "masks" (n_g, B, N); without (the teacher, whose center averages every token)
    "global_patch" (n_g, B, N, K2)."""

    def __init__(self, backbone: nn.Module, head: iBOTHead):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim(backbone)))  # iBOT's masked_embed

    def forward(self, views: Views) -> dict:
        n_g, b = len(views.global_views), views.batch_size
        masks = None
        if views.masks is not None:
            masks = [views.masks.flatten(0, 1)] + [None] * (len(views.crops()) - 1)  # (n_g·B, N) for the globals
        crops = [torch.cat(views.global_views), *views.local_views, *views.extra.values()]
        tokens = run_backbone(self.backbone, crops, masks, self.mask_token)
        glob = tokens[0]  # cls (n_g·B, D), patch (n_g·B, N, D)
        cls = torch.cat([glob.cls] + [t.cls for t in tokens[1:]])  # (n_views·B, D)
        logits = self.head(cls).view(n_g + len(crops) - 1, b, -1)  # (n_views, B, K)
        out = views.split(logits)
        out["global_cls_tokens"] = glob.cls.view(n_g, b, -1)  # (n_g·B, D) → (n_g, B, D), for KoLeo
        if views.masks is not None:
            out["global_patch_masked"] = self.head.patch(glob.patch[masks[0]])  # (n_g·B, N, D)[mask] → (n, K2)
            out["masks"] = views.masks  # (n_g, B, N), for the loss
        else:
            out["global_patch"] = self.head.patch(glob.patch).view(n_g, b, glob.patch.shape[1], -1)  # (n_g, B, N, K2)
        return out


class IBOT(Method):
    name = "ibot"
    target = "distillation"
    clip_mode = "per_param"  # iBOT's utils.clip_gradients

    @staticmethod
    def _pred_ratios(cfg: dict) -> tuple[list[float], list[float]]:
        """``ibot.pred_ratio`` and one variance per ratio (``ibot.pred_ratio_var``), checked."""
        c = cfg["ibot"]
        ratios, variances = list(c["pred_ratio"]), list(c["pred_ratio_var"])
        if len(variances) == 1:
            variances *= len(ratios)
        if len(ratios) != len(variances) or any(r - v < 0 or r + v > 1 for r, v in zip(ratios, variances)):
            raise UserError(f"ibot.pred_ratio={ratios} and ibot.pred_ratio_var={list(c['pred_ratio_var'])}: need one "
                            "variance per ratio (or one for all) and 0 <= ratio - var, ratio + var <= 1")
        return ratios, variances

    @classmethod
    def check_config(cls, cfg: dict) -> None:
        cls._pred_ratios(cfg)

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        c = cfg["ibot"]
        size = cfg["data"]["image_size"]
        self.pred_ratio, self.pred_ratio_var = self._pred_ratios(cfg)

        def net(drop_path: float) -> iBOTNet:
            bb = build_backbone({**cfg["model"], "drop_path_rate": drop_path}, size)
            head = iBOTHead(embed_dim(bb), c["out_dim"], c["patch_out_dim"], c["hidden_dim"], c["bottleneck_dim"],
                            c["norm_last_layer"], c["shared_head"])
            return iBOTNet(bb, head)

        self.student, self.teacher = student_and_teacher(net, cfg["model"]["drop_path_rate"])
        patch = self.student.backbone.patch_embed.patch_size
        self.grid = (size // patch[0], size // patch[1])
        k2 = c["out_dim"] if c["shared_head"] else c["patch_out_dim"]  # a shared last layer has out_dim outputs
        self.ibot_loss = iBOTLoss(
            c["out_dim"], k2, ngcrops=2, nlcrops=int(cfg["aug"]["n_local"]),
            warmup_teacher_temp=c["warmup_teacher_temp"], teacher_temp=c["teacher_temp"],
            warmup_teacher_temp2=c["warmup_teacher_patch_temp"], teacher_temp2=c["teacher_patch_temp"],
            warmup_teacher_temp_epochs=c["warmup_teacher_temp_epochs"], nepochs=int(cfg["optim"]["epochs"]),
            student_temp=c["student_temp"], center_momentum=c["center_momentum"],
            center_momentum2=c["center_momentum2"], lambda1=c["lambda1"], lambda2=c["lambda2"])
        self.koleo_loss = KoLeoLoss()

    def view_spec(self) -> ViewSpec:
        return ViewSpec(n_global=2, n_local=int(self.cfg["aug"]["n_local"]), masks=True)

    def schedules(self, epochs: int, niter: int) -> dict[str, np.ndarray]:
        c = self.cfg["ibot"]
        temp, temp2 = ibot_temperature_schedules(c["warmup_teacher_temp"], c["teacher_temp"],
                                                 c["warmup_teacher_patch_temp"], c["teacher_patch_temp"],
                                                 c["warmup_teacher_temp_epochs"], epochs)  # per epoch
        return {"momentum": cosine_schedule(c["momentum_teacher"], 1.0, epochs, niter),
                "teacher_temp": np.repeat(temp, niter), "teacher_patch_temp": np.repeat(temp2, niter)}

    def param_groups(self) -> list[dict]:
        return default_param_groups(self.student, {id(p) for p in self.student.head.last_layers()})

    def sample_masks(self, batch_size: int, rng: random.Random) -> torch.Tensor:
        masks = ibot_masks(2 * batch_size, self.grid, self.pred_ratio, self.pred_ratio_var, rng=rng)
        return masks.view(2, batch_size, -1)  # (n_g·B, h, w) -> (n_g, B, N)

    def loss(self, s_out: dict, t_out: dict | None, step: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n_g, b = s_out["global"].shape[:2]
        masks = s_out["masks"]  # (n_g, B, N)
        local = s_out["local"].flatten(0, 1) if s_out["local"].shape[0] else None  # (n_l·B, K)
        out = self.ibot_loss((s_out["global"].flatten(0, 1), s_out["global_patch_masked"]),
                             (t_out["global"].flatten(0, 1), t_out["global_patch"].flatten(0, 1)),
                             local, [m.view(b, 1, -1) for m in masks], step.epoch)
        loss, parts = out["loss"], {"loss_cls": out["cls"].detach(), "loss_mim": out["patch"].detach()}
        w = self.cfg["ibot"]["koleo_loss_weight"]
        if w > 0:
            koleo = w * koleo_over_crops(self.koleo_loss, s_out["global_cls_tokens"])
            loss = loss + koleo
            parts["loss_koleo"] = koleo.detach()
        return loss, parts

    def disentangle_distill(self, s_int: torch.Tensor, t_mixed: torch.Tensor, step: StepInfo) -> torch.Tensor:
        target = self.ibot_loss.cls_targets(t_mixed, step.epoch)  # CLS center read, not updated
        return self.ibot_loss.cls_cross_entropy(target, s_int)
