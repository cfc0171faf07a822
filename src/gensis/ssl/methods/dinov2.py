"""DINOv2 (Oquab et al., 2023, "DINOv2: Learning Robust Visual Features without Supervision") as a ``Method``.

    student: ViT (+ mask token) on 2 global crops (block-masked) + n_local local crops
             DINO head on every CLS token; iBOT head (the DINO head itself unless ``ibot_separate_head``) on
             the masked patch tokens of the global crops only
    teacher: EMA copy on the 2 unmasked global crops; its heads run on the CLS tokens and on the patch
             tokens at the student's masked positions
    loss   = w_dino · (DINO global + local terms)             ``losses.dinov2_dino_loss``
           + w_koleo · Σ_{global crops} KoLeo(student CLS)    ``losses.koleo_loss`` (backbone CLS, before the head)
           + w_ibot · iBOT masked-patch loss                  ``losses.dinov2_ibot_patch_loss``
    teacher targets: softmax centering with a lazily applied EMA center (``train.centering: centering`` of
    ``ssl_default_config.yaml``, the default) or Sinkhorn-Knopp (``sinkhorn_knopp``, the ViT-L/g configs).

Masks (``dinov2/data/collate.py``): of the 2B global crops, int(2B · mask_sample_probability) get a block mask
whose ratio is drawn stratified over ``mask_ratio_min_max`` (``gensis.ssl.masking.collate_masks``); at most
half the tokens per block (``max_num_patches`` = N/2, as ``train.py``).

Optimisation as ``dinov2/train/train.py`` and ``utils/param_groups.py``: layer-wise lr decay
(lr · layerwise_decay^(L + 1 − layer), layer 0 = patch/position embeddings, tokens; i + 1 = block i;
L + 1 = final norm and heads), patch-embedding lr × ``patch_embed_lr_mult``, no weight decay on biases,
norms and layer-scale gammas, last layers frozen in the first ``optim.freeze_last_layer`` epochs, lr scaled
by sqrt(batch / 1024) (``scaling_rule: sqrt_wrt_1024``), gradient clipping of the global norm. Drop path:
the same rate in every block (``drop_path_uniform``). Teacher temperature: linear warm-up per iteration
from ``warmup_teacher_temp`` to ``teacher_temp`` over ``warmup_teacher_temp_epochs``, then constant;
teacher momentum cosine from ``momentum_teacher`` to ``final_momentum_teacher``.

Layer scale (``layerscale: 1e-5``): ``model.init_values`` (timm's LayerScale), set for DINOv2 by the ``paper``
preset's ``per_method``; its gammas get no weight decay. Not reproduced: xFormers/FSDP and the stochastic-depth
batch subsampling of ``drop_add_residual_stochastic_depth``.

Gen-DINOv2: disentanglement at the image-level (DINO head) output only, through this method's teacher
targets of the mixed teacher outputs (the softmax center read, not updated; or Sinkhorn-Knopp on the
mixed batch); the iBOT and KoLeo terms are untouched.

Reference: facebookresearch/dinov2 ``dinov2/train/ssl_meta_arch.py``, ``dinov2/configs/ssl_default_config.yaml``.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from gensis.models.backbone import build_backbone, embed_dim
from gensis.models.dino_head import DINOHead
from gensis.ssl.losses.dinov2_dino_loss import DINOv2DINOLoss
from gensis.ssl.losses.dinov2_ibot_patch_loss import DINOv2iBOTPatchLoss, masks_weight_of
from gensis.ssl.losses.koleo_loss import KoLeoLoss, koleo_over_crops
from gensis.ssl.masking import MaskingGenerator, collate_masks
from gensis.ssl.methods.base import Method, StepInfo, Views, ViewSpec, run_backbone, student_and_teacher
from gensis.ssl.schedules import CosineScheduler, cosine_schedule


def uniform_drop_path(backbone: nn.Module, rate: float) -> None:
    """Give every block of a timm ViT the same stochastic-depth rate (DINOv2's ``drop_path_uniform``)."""
    from timm.layers import DropPath

    for blk in backbone.blocks:
        for name in ("drop_path1", "drop_path2"):
            if hasattr(blk, name):
                setattr(blk, name, DropPath(rate) if rate > 0 else nn.Identity())


def layer_id(name: str, n_blocks: int) -> int:
    """DINOv2's ``get_vit_lr_decay_rate`` layer of a backbone parameter name (``blocks.i.…`` → i + 1)."""
    if any(k in name for k in ("pos_embed", "patch_embed", "mask_token", "cls_token", "reg_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return n_blocks + 1


class DINOv2Net(nn.Module):
    """Backbone + mask token + DINO head (+ separate iBOT head).

    ``forward(views)`` → {"global": (2, B, K), "local": (n_l, B, K), "extra": {name: (B, K)}} and
      student (``views.masks`` given): "global_cls_tokens" (2, B, D) backbone CLS for KoLeo, "masks" (2, B, N),
      "global_patch_masked" (n, K2) iBOT-head outputs of the masked tokens (row-major order of ``masks``);
      teacher: "global_patch_tokens" (2, B, N, D), the backbone patch tokens (its head runs in ``loss`` on
      the student's masked positions only).
    """

    def __init__(self, backbone: nn.Module, dino_head: DINOHead, ibot_head: DINOHead | None):
        super().__init__()
        self.backbone, self.dino_head, self.ibot_head = backbone, dino_head, ibot_head
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim(backbone)))  # dinov2's mask_token (1, D)

    def patch_head(self, tokens: torch.Tensor) -> torch.Tensor:
        return (self.ibot_head if self.ibot_head is not None else self.dino_head)(tokens)

    def forward(self, views: Views) -> dict:
        n_g, b = len(views.global_views), views.batch_size
        crops = [torch.cat(views.global_views), *views.local_views, *views.extra.values()]
        masks = None
        if views.masks is not None:
            masks = [views.masks.flatten(0, 1)] + [None] * (len(crops) - 1)  # (2B, N) for the globals
        tokens = run_backbone(self.backbone, crops, masks, self.mask_token)
        glob = tokens[0]  # cls (2B, D), patch (2B, N, D)
        cls = torch.cat([glob.cls] + [t.cls for t in tokens[1:]])  # (n_views·B, D)
        out = views.split(self.dino_head(cls).view(n_g + len(crops) - 1, b, -1))  # (n_views, B, K) → named
        if views.masks is None:
            out["global_patch_tokens"] = glob.patch.view(n_g, b, *glob.patch.shape[1:])  # (2, B, N, D)
            return out
        out["global_cls_tokens"] = glob.cls.view(n_g, b, -1)  # (2, B, D)
        out["masks"] = views.masks
        masked = glob.patch.flatten(0, 1)[views.masks.flatten()]  # (2B·N, D) → (n, D)
        out["global_patch_masked"] = self.patch_head(masked)  # (n, K2)
        return out


class DINOv2(Method):
    name = "dinov2"
    target = "distillation"
    clip_mode = "global"  # dinov2 clips the gradient norm of each student module (fsdp clip_grad_norm_)

    def __init__(self, cfg: dict):
        super().__init__(cfg)
        c = cfg["dinov2"]
        size = cfg["data"]["image_size"]

        def net(drop_path: float) -> DINOv2Net:
            bb = build_backbone({**cfg["model"], "drop_path_rate": drop_path}, size)
            if c["drop_path_uniform"]:
                uniform_drop_path(bb, drop_path)
            d = embed_dim(bb)  # dinov2's DINOHead learns the norm of its last layer (norm_last_layer=False)
            dino = DINOHead(d, c["head_n_prototypes"], c["head_hidden_dim"], c["head_bottleneck_dim"],
                            nlayers=c["head_nlayers"], norm_last_layer=False)
            ibot = None
            if c["ibot_separate_head"]:
                ibot = DINOHead(d, c["ibot_head_n_prototypes"], c["ibot_head_hidden_dim"],
                                c["ibot_head_bottleneck_dim"], nlayers=c["ibot_head_nlayers"], norm_last_layer=False)
            return DINOv2Net(bb, dino, ibot)

        self.student, self.teacher = student_and_teacher(net, cfg["model"]["drop_path_rate"])
        patch = self.student.backbone.patch_embed.patch_size
        grid = (size // patch[0], size // patch[1])
        self.mask_generator = MaskingGenerator(grid, max_num_patches=0.5 * grid[0] * grid[1])
        k2 = c["ibot_head_n_prototypes"] if c["ibot_separate_head"] else c["head_n_prototypes"]
        self.dino_loss = DINOv2DINOLoss(c["head_n_prototypes"], c["student_temp"], c["center_momentum"],
                                        centering=c["centering"])
        self.ibot_patch_loss = DINOv2iBOTPatchLoss(k2, c["student_temp"], c["center_momentum"],
                                                   centering=c["centering"])
        self.koleo_loss = KoLeoLoss()

    def view_spec(self) -> ViewSpec:
        return ViewSpec(n_global=2, n_local=int(self.cfg["aug"]["n_local"]), masks=True)

    def lr_scale(self, batch_size: int) -> float:
        return math.sqrt(batch_size / 1024)  # scaling_rule: sqrt_wrt_1024

    def schedules(self, epochs: int, niter: int) -> dict[str, np.ndarray]:
        c = self.cfg["dinov2"]
        total = epochs * niter
        warm = min(int(c["warmup_teacher_temp_epochs"] * niter), total)
        temp = CosineScheduler(c["teacher_temp"], c["teacher_temp"], warm, warmup_iters=warm,
                               start_warmup_value=c["warmup_teacher_temp"])
        return {"momentum": cosine_schedule(c["momentum_teacher"], c["final_momentum_teacher"], epochs, niter),
                "teacher_temp": np.array([temp[it] for it in range(total)])}

    def param_groups(self) -> list[dict]:
        """DINOv2's ``get_params_groups_with_decay`` + ``fuse_params_groups``."""
        c = self.cfg["dinov2"]
        n_blocks = len(self.student.backbone.blocks)
        fused: dict[tuple, list] = defaultdict(list)
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("backbone.") or name == "mask_token":
                sub = name.removeprefix("backbone.")
                lr_mult = c["layerwise_decay"] ** (n_blocks + 1 - layer_id(sub, n_blocks))
            else:  # heads: no blocks, lr multiplier 1
                lr_mult = 1.0
            if "patch_embed" in name:
                lr_mult *= c["patch_embed_lr_mult"]
            wd_mult = 0.0 if (name.endswith(".bias") or "norm" in name or "gamma" in name) else 1.0
            fused[(lr_mult, wd_mult, "last_layer" in name)].append(p)
        return [{"params": ps, "lr_mult": lr, "wd_mult": wd, **({"last_layer": True} if last else {})}
                for (lr, wd, last), ps in fused.items()]

    def sample_masks(self, batch_size: int, rng: random.Random) -> torch.Tensor:
        c = self.cfg["dinov2"]
        bm = collate_masks(2 * batch_size, self.mask_generator, c["mask_ratio_min_max"],
                           c["mask_sample_probability"], rng)
        return bm.masks.view(2, batch_size, -1)  # (2B, N) crop-major → (2, B, N)

    def loss(self, s_out: dict, t_out: dict | None, step: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.cfg["dinov2"]
        temp = step.values["teacher_temp"]
        n_g, b = s_out["global"].shape[:2]
        parts: dict[str, torch.Tensor] = {}
        targets = self.dino_loss.teacher_targets(t_out["global"].flatten(0, 1), temp).view(n_g, b, -1)  # (2, B, K)
        local = s_out["local"].flatten(0, 1) if s_out["local"].shape[0] else None  # (n_l·B, K)
        terms = self.dino_loss.multicrop_terms(s_out["global"].flatten(0, 1), local, targets)
        loss = c["dino_loss_weight"] * (terms["global"] + terms["local"])
        parts["loss_dino_global"], parts["loss_dino_local"] = terms["global"].detach(), terms["local"].detach()

        if c["koleo_loss_weight"] > 0:  # per global crop: the two crops of one image are not neighbours
            koleo = c["koleo_loss_weight"] * koleo_over_crops(self.koleo_loss, s_out["global_cls_tokens"])
            loss = loss + koleo
            parts["loss_koleo"] = koleo.detach()

        if c["ibot_loss_weight"] > 0:
            masks = s_out["masks"].flatten(0, 1)  # (2B, N)
            with torch.no_grad():  # the teacher's head at the student's masked positions only
                t_tokens = t_out["global_patch_tokens"].flatten(0, 2)[masks.flatten()]  # (n, D)
                t_masked = self.teacher.patch_head(t_tokens.to(next(self.teacher.parameters()).dtype))
            t_targets = self.ibot_patch_loss.teacher_targets(t_masked, temp)  # (n, K2)
            ibot = self.ibot_patch_loss.forward_masked(s_out["global_patch_masked"], t_targets, masks,
                                                       masks_weight_of(masks))
            ibot = ibot * 2 * (1 / n_g)  # ssl_meta_arch's loss_scales · ibot_loss_scale
            loss = loss + c["ibot_loss_weight"] * ibot
            parts["loss_ibot"] = ibot.detach()
        return loss, parts

    def disentangle_distill(self, s_int: torch.Tensor, t_mixed: torch.Tensor, step: StepInfo) -> torch.Tensor:
        targets = self.dino_loss.teacher_targets(t_mixed, step.values["teacher_temp"], update_center=False)
        return self.dino_loss([s_int], [targets])  # mean_batch CE of one (student, target) pair
