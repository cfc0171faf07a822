"""SimCLR on a ViT (Chen et al., 2020), built as StableRep's implementation (Tian et al., NeurIPS 2023), which the
Gen-SIS paper used for its SimCLR rows (supplementary Sec. 9.5.3).

    student: ViT CLS token → projection MLP (Linear-BN-ReLU, Linear-BN-ReLU, Linear), applied to each view
             separately (so BatchNorm statistics are per view, as StableRep's ``VisionEncoder``)
    loss   = NT-Xent / InfoNCE over 2 views of each image with temperature τ; the negatives are the other
             views of the batch on every rank (gathered with gradient), ``losses.multipos_contrastive_loss``
    no teacher (nothing is EMA-updated; the student backbone is the one exported)

Gen-SimCLR: the paper's Eq. 8 (``losses.gen_contrastive_loss``): the projection of I_int has I_1 (weight α)
and I_2 (weight 1 − α) as positives, every real image of the batch (all ranks) as candidates.

Reference: google-research/syn-rep-learn ``StableRep/models/StableRep.py`` (``VisionEncoder``: ``ssl_mlp_dim``
4096, ``ssl_emb_dim`` 256), ``StableRep/models/losses.py`` (``MultiPosConLoss``), ``main_stablerep.py``
(``ssl_temp`` 0.1, AdamW, weight decay 0.1 without decay on biases and norms, no gradient clipping).
"""

from __future__ import annotations

import torch
from torch import nn

from gensis.distributed import sync_batchnorm
from gensis.models.backbone import build_backbone, embed_dim
from gensis.ssl.losses.gen_contrastive_loss import gen_contrastive_loss
from gensis.ssl.losses.multipos_contrastive_loss import NTXentLoss
from gensis.ssl.methods.base import Method, StepInfo, Views, ViewSpec, run_backbone


def projection_mlp(in_dim: int, mlp_dim: int, out_dim: int) -> nn.Sequential:
    """StableRep's ``image_mlp``: 3 linear layers, BatchNorm + ReLU after the first two."""
    return nn.Sequential(
        nn.Linear(in_dim, mlp_dim), nn.BatchNorm1d(mlp_dim), nn.ReLU(inplace=True),
        nn.Linear(mlp_dim, mlp_dim), nn.BatchNorm1d(mlp_dim), nn.ReLU(inplace=True),
        nn.Linear(mlp_dim, out_dim),
    )


class SimCLRNet(nn.Module):
    """Backbone + projection MLP. ``forward(views)`` → {"global": (2, B, E), "local": (0, B, E),
    "extra": {name: (B, E)}}: un-normalised projections (the loss normalises)."""

    def __init__(self, backbone: nn.Module, mlp: nn.Sequential):
        super().__init__()
        self.backbone, self.mlp = backbone, mlp

    def forward(self, views: Views) -> dict:
        crops = [*views.global_views, *views.extra.values()]
        tokens = run_backbone(self.backbone, crops)  # one backbone batch per size; per-view outputs
        proj = torch.stack([self.mlp(t.cls) for t in tokens])  # (n_views, B, E): BatchNorm per view
        n_g = len(views.global_views)
        out = {"global": proj[:n_g], "local": proj.new_zeros(0, *proj.shape[1:]),
               "extra": {name: proj[n_g + j] for j, name in enumerate(views.extra)}}
        return out


class SimCLR(Method):
    name = "simclr"
    target = "contrastive"
    clip_mode = "global"  # with optim.clip_grad = 0 (StableRep does not clip) this only measures the norm

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        c = cfg["simclr"]
        bb = build_backbone(cfg["model"], cfg["data"]["image_size"])
        mlp = projection_mlp(embed_dim(bb), c["mlp_dim"], c["emb_dim"])
        mlp = sync_batchnorm(mlp)  # StableRep's SyncBatchNorm (on GPUs)
        self.student = SimCLRNet(bb, mlp)
        self.teacher = None
        self.ntxent = NTXentLoss(c["temperature"])

    def needs_two_images(self) -> str | None:
        return "its projection MLP has BatchNorm, and NT-Xent needs other images as negatives"

    def view_spec(self) -> ViewSpec:
        return ViewSpec(n_global=2, n_local=0)

    def loss(self, s_out: dict, t_out: dict | None, step: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.ntxent(list(s_out["global"]))  # 2 × (B, E), negatives from every rank
        return loss, {"loss_ntxent": loss.detach()}

    def disentangle_contrastive(self, f_int: torch.Tensor, f_real: torch.Tensor, i1: torch.Tensor,
                                i2: torch.Tensor, alpha: torch.Tensor, step: StepInfo) -> torch.Tensor:
        return gen_contrastive_loss(f_int, f_real, i1, i2, alpha, self.cfg["simclr"]["temperature"])
