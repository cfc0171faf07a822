"""Training steps written with lightly 1.6.0's heads and losses, the way lightly's examples write them
(examples/pytorch/dino.py, dinov2.py, simclr.py), on a given timm ViT: the comparison side of
``bench_methods_step.py`` and ``bench_pretrain_throughput.py``.

    dino    DINOProjectionHead + DINOLoss; student on every view, teacher (EMA) on the 2 global views
    ibot    MaskedVisionTransformerTIMM (mask token) + one DINOProjectionHead for CLS and masked patches;
            DINOLoss (CLS, all crops) + IBOTPatchLoss (masked patches of the 2 global views)
    dinov2  as ibot + 0.1 · KoLeoLoss on the student's backbone CLS of each global view
    simclr  SimCLRProjectionHead (3 layers, as StableRep's MLP) + NTXentLoss, no teacher

``batched=False`` (the examples' style): one backbone call per view for dino/simclr, per group (global,
local) for ibot/dinov2. ``batched=True``: one backbone call per crop resolution, as gensis does, so that a
step comparison isolates the heads and losses. AdamW on every student parameter (lightly's examples use
Adam/AdamW without gradient clipping; none here either), EMA with ``update_momentum``, the last layer's
gradients cancelled in the first ``freeze_last_layer`` epochs with ``cancel_last_layer_gradients``.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

EXAMPLE_CFG_KEYS = {"dino": "dino", "ibot": "ibot", "dinov2": "dinov2", "simclr": "simclr"}


def _dino_head(dim: int, c: dict, method: str, freeze_last_layer: int) -> nn.Module:
    from lightly.models.modules import DINOProjectionHead

    if method == "dinov2":
        hid, bot, k, norm = c["head_hidden_dim"], c["head_bottleneck_dim"], c["head_n_prototypes"], False
    else:
        hid, bot, k, norm = c["hidden_dim"], c["bottleneck_dim"], c["out_dim"], c["norm_last_layer"]
    with warnings.catch_warnings():  # lightly still uses the deprecated torch.nn.utils.weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        return DINOProjectionHead(dim, hid, bot, k, freeze_last_layer=freeze_last_layer, norm_last_layer=norm)


class LightlyStep:
    """Student/teacher (or student only) + lightly heads/losses; ``step(views, masks)`` is one training step."""

    def __init__(self, method: str, cfg: dict, vit: nn.Module, batched: bool = False, lr: float = 1e-4):
        from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss, NTXentLoss
        from lightly.models.modules import MaskedVisionTransformerTIMM, SimCLRProjectionHead

        self.method, self.cfg, self.batched = method, cfg, batched
        c = cfg[EXAMPLE_CFG_KEYS[method]]
        dim = int(vit.embed_dim)
        self.freeze = int(cfg["optim"]["freeze_last_layer"])
        self.masked = method in ("ibot", "dinov2")
        if self.masked:
            bb = MaskedVisionTransformerTIMM(vit, weight_initialization="skip", pos_embed_initialization="skip")
        else:
            bb = vit
        if method == "simclr":
            head = SimCLRProjectionHead(dim, c["mlp_dim"], c["emb_dim"], num_layers=3)
            self.teacher = None
            self.loss = NTXentLoss(temperature=c["temperature"])
        else:
            head = _dino_head(dim, c, method, self.freeze)
            t_head = _dino_head(dim, c, method, self.freeze)  # weight_norm heads cannot be deep-copied
            t_head.load_state_dict(head.state_dict())
            self.teacher = nn.ModuleDict({"backbone": copy.deepcopy(bb), "head": t_head})
            self.teacher.requires_grad_(False)  # lightly's deactivate_requires_grad
            k = c["head_n_prototypes"] if method == "dinov2" else c["out_dim"]
            self.loss = DINOLoss(k, warmup_teacher_temp_epochs=0, student_temp=c["student_temp"],
                                 center_momentum=c["center_momentum"])
            self.temp = float(c["teacher_temp"])
            if self.masked:
                self.patch_loss = IBOTPatchLoss(k, student_temp=c["student_temp"],
                                                center_momentum=c["center_momentum"])
            self.koleo = KoLeoLoss() if method == "dinov2" else None
            self.koleo_w = float(c.get("koleo_loss_weight", 0.0))
        self.student = nn.ModuleDict({"backbone": bb, "head": head})
        self.opt = torch.optim.AdamW(self.student.parameters(), lr=lr, weight_decay=0.04)
        self.momentum = float(c.get("momentum_teacher", 0.996))

    # -- helpers -------------------------------------------------------------------------------------------
    def _cls(self, net: nn.ModuleDict, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Backbone CLS (B, D) of each view: one call per view, or per resolution when batched."""
        bb = net["backbone"]
        if not self.batched:
            return [bb(v) for v in views]
        out, start = [], 0
        while start < len(views):
            end = start
            while end < len(views) and views[end].shape[-1] == views[start].shape[-1]:
                end += 1
            out.extend(bb(torch.cat(views[start:end])).chunk(end - start))  # (n·B, D) → n × (B, D)
            start = end
        return out

    def _ema(self) -> None:
        from lightly.models.utils import update_momentum

        update_momentum(self.student["backbone"], self.teacher["backbone"], m=self.momentum)
        update_momentum(self.student["head"], self.teacher["head"], m=self.momentum)

    # -- one step ------------------------------------------------------------------------------------------
    def step(self, views: list[torch.Tensor], masks: torch.Tensor | None = None, epoch: int = 0) -> float:
        """``views``: 2 global + n_local (B, 3, s, s); ``masks``: (2B, N) bool for ibot/dinov2 (None: drawn
        with lightly's ``random_block_mask``)."""
        if self.teacher is not None:
            self._ema()  # lightly's examples update the teacher at the start of the step
        if self.method == "simclr":
            z = [self.student["head"](f) for f in self._cls(self.student, views[:2])]
            loss = self.loss(z[0], z[1])
        elif self.method == "dino":
            with torch.no_grad():
                t_out = [self.teacher["head"](f) for f in self._cls(self.teacher, views[:2])]
            s_out = [self.student["head"](f) for f in self._cls(self.student, views)]
            loss = self.loss(t_out, s_out, teacher_temp=self.temp)
        else:
            loss = self._masked_step(views, masks)
        loss.backward()
        if self.teacher is not None:
            self.student["head"].cancel_last_layer_gradients(current_epoch=epoch)
        self.opt.step()
        self.opt.zero_grad()
        return float(loss.detach())

    def _masked_step(self, views: list[torch.Tensor], masks: torch.Tensor | None) -> torch.Tensor:
        from lightly.models.utils import random_block_mask

        g = torch.cat(views[:2])  # (2B, 3, G, G)
        b2 = g.shape[0]
        bb_s, bb_t = self.student["backbone"], self.teacher["backbone"]
        h, w = bb_s.vit.patch_embed.grid_size
        if masks is None:
            # (2B, N); blocks of at least 1 patch (the default 4 fails on grids of a few patches, e.g. 4x4)
            masks = random_block_mask(size=(b2, h, w), min_num_masks_per_block=1, device=g.device).flatten(1)
        seq_mask = torch.cat([masks.new_zeros(b2, 1), masks], dim=1)  # (2B, 1 + N): the CLS is never masked
        head_s, head_t = self.student["head"], self.teacher["head"]
        with torch.no_grad():
            t_tok = bb_t.encode(g)  # (2B, 1 + N, D)
            t_cls = head_t(t_tok[:, 0])  # (2B, K)
            t_patch = head_t(t_tok[:, 1:][masks])  # (n_masked, K)
        s_tok = bb_s.encode(g, mask=seq_mask)  # (2B, 1 + N, D)
        s_cls = head_s(s_tok[:, 0])  # (2B, K)
        s_patch = head_s(s_tok[:, 1:][masks])  # (n_masked, K)
        local = views[2:]
        s_local = []
        if local:
            s_local = list(head_s(bb_s(torch.cat(local))).chunk(len(local)))  # one call, as the dinov2 example
        loss = self.loss(list(t_cls.chunk(2)), list(s_cls.chunk(2)) + s_local, teacher_temp=self.temp)
        loss = loss + self.patch_loss(t_patch, s_patch, masks.view(b2, h, w), teacher_temp=self.temp)
        if self.koleo is not None and self.koleo_w > 0:
            loss = loss + self.koleo_w * sum(self.koleo(x) for x in s_tok[:, 0].chunk(2))
        return loss
