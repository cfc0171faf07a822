"""One DINO training step with gensis's DINOLoss + DINOHead against lightly's DINOLoss + DINOProjectionHead.

    python benchmarks/bench_dino_step.py                       # demo preset (28 px, tiny ViT), batch 128
    python benchmarks/bench_dino_step.py --preset small --batch-size 64 --reps 20 --threads 2

Both pipelines share everything but the head and the loss: the same timm ViT (identical initial weights),
the same multi-crop batch (2 global + n_local crops of real images, made once), the same backbone calls
(one per crop resolution), AdamW, per-parameter gradient clipping and the EMA teacher update. The heads
start from the same weights, so the first losses must agree (printed as a check). Repetitions are
interleaved (ours, theirs, theirs, ours, ...) so that load from other processes hits both alike; the
median step time of each is reported as images/s (batch images per second, all crops included), with
the ratio ours/theirs. A second table times the head + loss alone (forward + backward on fixed features).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings
from typing import Callable

import torch
from torch import nn

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gensis.config import load_config  # noqa: E402
from gensis.data.batch_augment import BatchDINOAugmentation  # noqa: E402
from gensis.data.loader import ImageBatches  # noqa: E402
from gensis.data.sources import open_data  # noqa: E402
from gensis.data.transforms import MultiCropConfig  # noqa: E402
from gensis.device import autocast, pick_device, use_bf16  # noqa: E402
from gensis.models.backbone import build_backbone, embed_dim  # noqa: E402
from gensis.models.dino_head import DINOHead  # noqa: E402
from gensis.ssl.dino_loss import DINOLoss  # noqa: E402
from gensis.ssl.methods.base import default_param_groups as param_groups  # noqa: E402
from gensis.train.foreach import clip_gradients, ema_update  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import interleaved, load_line, table  # noqa: E402


def copy_head(src: DINOHead, dst: nn.Module) -> None:
    """Give lightly's head the weights of ours: the MLP's Linear layers in order, then the last layer's v."""
    ours = [m for m in src.mlp if isinstance(m, nn.Linear)]
    theirs = [m for m in dst.layers if isinstance(m, nn.Linear)]
    assert len(ours) == len(theirs)
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        dst.last_layer.weight_v.copy_(src.last_layer.parametrizations.weight.original1)
        dst.last_layer.weight_g.fill_(1.0)


class Pipeline:
    """Student/teacher backbones + a head and a loss; ``step()`` is one full DINO training step."""

    def __init__(self, make: Callable[[], nn.ModuleDict], loss: nn.Module, kind: str, device: torch.device,
                 bf16: bool):
        self.kind, self.device, self.bf16 = kind, device, bf16
        self.student = make().to(device)
        self.teacher = make().to(device)  # (lightly's weight_norm head cannot be deep-copied)
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.loss = loss.to(device)
        self.opt = torch.optim.AdamW(param_groups(self.student), lr=1e-4, weight_decay=0.04)

    def forward(self, net: nn.ModuleDict, crops: list[torch.Tensor]) -> torch.Tensor:
        feats, start = [], 0  # one backbone call per crop resolution, as MultiCropWrapper
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
                end += 1
            feats.append(net["backbone"](torch.cat(crops[start:end])))  # (n·B, D)
            start = end
        return net["head"](torch.cat(feats))  # (n_crops·B, K)

    def loss_of(self, s_out: torch.Tensor, t_out: torch.Tensor, n_crops: int, temp: float) -> torch.Tensor:
        if self.kind == "gensis":
            return self.loss(s_out, t_out, temp, 2)
        return self.loss(list(t_out.float().chunk(2)), list(s_out.float().chunk(n_crops)), teacher_temp=temp)

    def step(self, crops: list[torch.Tensor], temp: float = 0.04) -> float:
        with autocast(self.device, self.bf16):
            with torch.no_grad():
                t_out = self.forward(self.teacher, crops[:2])  # (2·B, K)
            s_out = self.forward(self.student, crops)  # (n_crops·B, K)
        loss = self.loss_of(s_out, t_out, len(crops), temp)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(list(self.student.parameters()), "per_param", 3.0)
        self.opt.step()
        ema_update(list(self.teacher.parameters()), list(self.student.parameters()), 0.996)
        return float(loss.detach())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="demo", help="pretrain preset giving the ViT, head and crop settings")
    ap.add_argument("--data", default="builtin:animal-mnist", help="images the crops are made of")
    ap.add_argument("--batch-size", type=int, default=None, help="images per step (default: the preset's)")
    ap.add_argument("--out-dim", type=int, default=None, help="head output dimension K (default: the preset's)")
    ap.add_argument("--reps", type=int, default=10, help="timed steps of each pipeline")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps of each pipeline first")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--amp", choices=["off", "bf16", "auto"], default="off",
                    help="bf16 autocast of both pipelines: off (fp32, the default), bf16, or auto (gensis's rule: "
                    "CUDA, CPUs with AMX or AVX512-BF16); was the preset's auto, bf16 on such CPUs since e10a1fc")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from lightly.loss import DINOLoss as LightlyDINOLoss
    from lightly.models.modules import DINOProjectionHead

    cfg = load_config("pretrain", args.preset)
    d, size = cfg["dino"], cfg["data"]["image_size"]
    out_dim = args.out_dim or d["out_dim"]
    batch = args.batch_size or cfg["optim"]["batch_size"]
    device = pick_device(args.device)
    bf16 = use_bf16(device, args.amp)

    torch.manual_seed(0)
    ds = open_data(args.data, "train", limit=batch)
    images, _ = next(ImageBatches(ds, batch, shuffle=False, load_size=size).epoch(0))  # (B, 3, H, W) uint8
    aug = BatchDINOAugmentation(MultiCropConfig.from_cfg(cfg["aug"], size), seed=0, device=device)
    crops = [c.contiguous() for c in aug(images)]  # 2 global + n_local × (B, 3, s, s)

    backbone = build_backbone({**cfg["model"], "drop_path_rate": 0.0}, size)
    dim = embed_dim(backbone)
    head = DINOHead(dim, out_dim, d["hidden_dim"], d["bottleneck_dim"], norm_last_layer=d["norm_last_layer"])

    def make_ours() -> nn.ModuleDict:
        return nn.ModuleDict({"backbone": copy.deepcopy(backbone), "head": copy.deepcopy(head)})

    def make_theirs() -> nn.ModuleDict:
        with warnings.catch_warnings():  # lightly still uses the deprecated torch.nn.utils.weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            lhead = DINOProjectionHead(dim, d["hidden_dim"], d["bottleneck_dim"], out_dim,
                                       norm_last_layer=d["norm_last_layer"])
        copy_head(head, lhead)
        return nn.ModuleDict({"backbone": copy.deepcopy(backbone), "head": lhead})

    ours = Pipeline(make_ours, DINOLoss(out_dim, d["student_temp"], d["center_momentum"]), "gensis", device, bf16)
    theirs = Pipeline(make_theirs, LightlyDINOLoss(out_dim, warmup_teacher_temp_epochs=0,
                                                   student_temp=d["student_temp"],
                                                   center_momentum=d["center_momentum"]), "lightly", device, bf16)

    l0, l1 = ours.step(crops), theirs.step(crops)
    print(f"check: first-step loss gensis {l0:.6f}  lightly {l1:.6f}  (same weights, same crops)")
    print(f"preset {args.preset}: {cfg['model']['arch']} dim {dim}, crops 2x{size}px + {len(crops) - 2}x"
          f"{crops[-1].shape[-1]}px, batch {batch}, K={out_dim}, device {device}, bf16 {bf16}, "
          f"threads {torch.get_num_threads()}, {args.reps} interleaved reps")

    print(load_line())
    times = interleaved({"gensis": lambda: ours.step(crops), "lightly": lambda: theirs.step(crops)},
                        args.reps, args.warmup, device)
    table("full training step", times, batch)

    # head + loss alone, on fixed backbone features (forward + backward)
    feats = torch.randn(len(crops) * batch, dim, device=device)
    t_feats = feats[:2 * batch]

    def head_loss(p: Pipeline):
        def fn():
            with torch.no_grad():
                t_out = p.teacher["head"](t_feats)
            s_out = p.student["head"](feats)
            loss = p.loss_of(s_out, t_out, len(crops), 0.04)
            p.student["head"].zero_grad(set_to_none=True)
            loss.backward()
        return fn

    times = interleaved({"gensis": head_loss(ours), "lightly": head_loss(theirs)}, args.reps, args.warmup, device)
    table("head + loss only (forward + backward)", times, batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
