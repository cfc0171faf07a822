"""DINO (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision Transformers") as a ``Method``.

    student: ViT + DINO head on 2 global + n_local crops     teacher: EMA copy, global crops only
    loss = DINOLoss(student(all crops), teacher(global crops), τ_t(epoch))   (``gensis.ssl.dino_loss``)

Schedules as in ``main_dino.py``: teacher momentum cosine from ``dino.momentum_teacher`` to 1 per iteration,
teacher temperature linear warm-up per epoch. Gen-DINO's disentanglement target: the DINO loss's own
centering and sharpening of the mixed raw teacher logits (``gensis.ssl.disentangle_loss``, Eq. 7).

Options beyond DINO's ViT defaults, both off by default: ``dino.use_bn_in_head`` (the original's
``--use_bn_in_head``; SyncBatchNorm under DDP on CUDA, as ``main_dino.py`` converts; on CPU/gloo each rank
normalizes its own batch) and ``dino.centering: sinkhorn_knopp`` (DINOv2's balanced teacher targets instead of
softmax centering; the EMA center is then unused). Off by default as well: ``dino.koleo_loss_weight`` adds
DINOv2's KoLeo term (Sablayrolles et al., 2019; ``gensis.ssl.losses.koleo_loss``) on the student's backbone CLS
of each global crop, as DINOv2 does (``dinov2/train/ssl_meta_arch.py``): w · Σ_{global crops} KoLeo(CLS).
Measured at the ``demo`` budget on colour images (docs/pretrain.md), it is what separates DINOv2, which
learns there, from DINO, which does not.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gensis.models.backbone import build_backbone, embed_dim
from gensis.models.dino_head import DINOHead
from gensis.distributed import sync_batchnorm
from gensis.errors import UserError
from gensis.ssl.dino_loss import DINOLoss
from gensis.ssl.losses.koleo_loss import KoLeoLoss, koleo_over_crops
from gensis.ssl.methods.base import (Method, StepInfo, Views, ViewSpec, default_param_groups, run_backbone,
                                     student_and_teacher)
from gensis.ssl.schedules import cosine_schedule, teacher_temp_schedule


class DINONet(nn.Module):
    """Backbone + DINO head; ``forward(views)`` → {"global": (n_global, B, K), "local": ..., "extra": {...},
    "global_cls_tokens": (n_global, B, D) the backbone CLS of the global crops (for KoLeo)}."""

    def __init__(self, backbone: nn.Module, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, views: Views) -> dict:
        crops = views.crops()
        cls = torch.cat([t.cls for t in run_backbone(self.backbone, crops)])  # (n_views·B, D)
        logits = self.head(cls)  # (n_views·B, K), head run once on every view
        out = views.split(logits.view(len(crops), views.batch_size, -1))  # (n_views, B, K) → named
        n_g = len(views.global_views)
        out["global_cls_tokens"] = cls[: n_g * views.batch_size].view(n_g, views.batch_size, -1)  # (n_g, B, D)
        return out


class DINO(Method):
    name = "dino"
    target = "distillation"
    clip_mode = "per_param"

    @classmethod
    def check_config(cls, cfg: dict) -> None:
        d = cfg["dino"]
        if d["sk_queue"] and d["centering"] != "sinkhorn_knopp":
            raise UserError(f"dino.sk_queue={d['sk_queue']} needs dino.centering=sinkhorn_knopp (the queue is "
                            f"Sinkhorn-Knopp's; it is {d['centering']})")

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        self.check_config(cfg)
        d = cfg["dino"]
        size = cfg["data"]["image_size"]

        def net(drop_path: float) -> DINONet:
            bb = build_backbone({**cfg["model"], "drop_path_rate": drop_path}, size)
            head = DINOHead(embed_dim(bb), d["out_dim"], d["hidden_dim"], d["bottleneck_dim"],
                            norm_last_layer=d["norm_last_layer"], use_bn=d["use_bn_in_head"])
            if d["use_bn_in_head"]:
                head = sync_batchnorm(head)  # main_dino.py: SyncBN when the head has BN (on GPUs)
            return DINONet(bb, head)

        self.student, self.teacher = student_and_teacher(net, cfg["model"]["drop_path_rate"])
        self.dino_loss = DINOLoss(d["out_dim"], d["student_temp"], d["center_momentum"], d["centering"],
                                  d["sk_queue"])  # buffers: center (and the Sinkhorn-Knopp queue)
        self.koleo_loss = KoLeoLoss()

    def needs_two_images(self) -> str | None:
        if self.cfg["dino"]["use_bn_in_head"]:
            return "dino.use_bn_in_head=true: a BatchNorm in training"
        return super().needs_two_images()

    def view_spec(self) -> ViewSpec:
        return ViewSpec(n_global=2, n_local=int(self.cfg["aug"]["n_local"]))

    def schedules(self, epochs: int, niter: int) -> dict[str, np.ndarray]:
        d = self.cfg["dino"]
        temp = teacher_temp_schedule(d["warmup_teacher_temp"], d["teacher_temp"], d["warmup_teacher_temp_epochs"],
                                     epochs)  # per epoch
        return {"momentum": cosine_schedule(d["momentum_teacher"], 1.0, epochs, niter),
                "teacher_temp": np.repeat(temp, niter)}

    def param_groups(self) -> list[dict]:
        return default_param_groups(self.student, {id(p) for p in self.student.head.last_layer.parameters()})

    def loss(self, s_out: dict, t_out: dict | None, step: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student = torch.cat([s_out["global"], s_out["local"]]).flatten(0, 1)  # (n_crops·B, K) crop-major
        teacher = t_out["global"].flatten(0, 1)  # (n_global·B, K)
        loss = self.dino_loss(student, teacher, step.values["teacher_temp"], n_global=t_out["global"].shape[0])
        parts = {"loss_dino": loss.detach()}
        w = self.cfg["dino"]["koleo_loss_weight"]
        if w > 0:  # per global crop, as DINOv2: the two crops of one image are not each other's neighbours
            koleo = w * koleo_over_crops(self.koleo_loss, s_out["global_cls_tokens"])
            loss = loss + koleo
            parts["loss_koleo"] = koleo.detach()
        return loss, parts

    def disentangle_distill(self, s_int: torch.Tensor, t_mixed: torch.Tensor, step: StepInfo) -> torch.Tensor:
        target = self.dino_loss.teacher_probs(t_mixed, step.values["teacher_temp"])  # center read, not updated
        return self.dino_loss.cross_entropy(target, s_int)
