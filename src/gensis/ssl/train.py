"""``gensis pretrain``: DINO, and Gen-DINO when a bank (or the pixel-interpolation ablation) is given.

One training step, top to bottom (``train_one_epoch``):

    images (B,3,H,W) uint8  ──batch_augment──▶ 2 global + n_local crops of the real images
    [Gen-DINO] global view 1 (and/or 0) replaced, per sample with prob. p, by a view of a synthetic image
    [Gen-DINO] interp view of I_int and a teacher view of the secondary image I_2
    teacher(global crops [+ I_2 view]) ──▶ t      (EMA of the student, no gradient)
    student(all crops [+ I_int view])  ──▶ s
    loss = DINO(s, t) [+ λ · disentanglement(s_int, t_1, t_2, α)]
    backward → clip → zero last-layer grads in the first epoch(s) → AdamW step → EMA update of the teacher

Schedules (per iteration): lr (linear warm-up + cosine), weight decay (cosine), teacher momentum (cosine
to 1); teacher temperature per epoch. All as in DINO's ``main_dino.py``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from gensis.checkpoint import load_checkpoint, load_optimizer, save_checkpoint, sub_state
from gensis.data.batch_augment import BatchDINOAugmentation, normalize, to_float
from gensis.data.loader import ImageBatches
from gensis.data.sources import open_data
from gensis.data.transforms import MultiCropConfig
from gensis.device import autocast
from gensis.distributed import barrier, cleanup, setup_training
from gensis.errors import UserError
from gensis.models.backbone import build_backbone, embed_dim
from gensis.models.dino_head import DINOHead, MultiCropWrapper
from gensis.progress import progress
from gensis.rundir import MetricsLog, RunDir, save_tensors
from gensis.ssl.dino_loss import DINOLoss
from gensis.ssl.disentangle_loss import disentanglement_loss
from gensis.ssl.schedules import cosine_schedule, teacher_temp_schedule

CHECKPOINT = "checkpoint.safetensors"


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def param_groups(model: nn.Module) -> list[dict]:
    """DINO's ``get_params_groups``: no weight decay on biases and norm parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def clip_gradients(model: nn.Module, clip: float) -> None:
    """DINO clips each parameter's gradient norm separately."""
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.data.norm(2)
            factor = clip / (norm + 1e-6)
            if factor < 1:
                p.grad.data.mul_(factor)


def build_dino(cfg: dict) -> tuple[MultiCropWrapper, MultiCropWrapper]:
    """Student and teacher (same architecture, teacher starts as a copy of the student)."""
    size = cfg["data"]["image_size"]
    d = cfg["dino"]

    def one(drop_path: float) -> MultiCropWrapper:
        bb = build_backbone({**cfg["model"], "drop_path_rate": drop_path}, size)
        head = DINOHead(embed_dim(bb), d["out_dim"], d["hidden_dim"], d["bottleneck_dim"],
                        norm_last_layer=d["norm_last_layer"])
        return MultiCropWrapper(bb, head)

    student = one(cfg["model"]["drop_path_rate"])
    teacher = one(0.0)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student, teacher


@dataclass
class Schedules:
    lr: np.ndarray
    wd: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray

    @classmethod
    def from_cfg(cls, cfg: dict, niter: int) -> "Schedules":
        o, d = cfg["optim"], cfg["dino"]
        lr = o["lr"] * o["batch_size"] / 256.0
        return cls(
            lr=cosine_schedule(lr, o["min_lr"], o["epochs"], niter, o["warmup_epochs"]),
            wd=cosine_schedule(o["weight_decay"], o["weight_decay_end"], o["epochs"], niter),
            momentum=cosine_schedule(d["momentum_teacher"], 1.0, o["epochs"], niter),
            teacher_temp=teacher_temp_schedule(d["warmup_teacher_temp"], d["teacher_temp"],
                                               d["warmup_teacher_temp_epochs"], o["epochs"]),
        )


class GenViews:
    """Where the extra (Gen-DINO) inputs come from: an augmentation bank, or pixel interpolation.

    ``bank`` is a ``gensis.bank.BankReader`` (or None). With ``interp == 'pixel'`` the interpolated image is
    α·I_1 + (1 − α)·I_2 of two real images with a random secondary drawn by seed (Table 12 ablation).
    """

    def __init__(self, cfg: dict, ds, images: torch.Tensor | None, bank=None, seed: int = 0):
        self.g = cfg["gen"]
        self.ds, self.bank = ds, bank
        self.interp = self.g["interp"]
        self.alphas = [float(a) for a in self.g["alphas"]]
        self.rng = np.random.default_rng([seed, 77])
        self.images = images  # all real images (N,3,H,W) uint8, for secondaries in pixel mode
        if self.interp == "bank" and bank is None:
            raise UserError("gen.interp=bank needs --bank BANK")
        if self.interp not in ("none", "bank", "pixel"):
            raise UserError(f"gen.interp must be none, bank or pixel, got '{self.interp}'")

    @property
    def uses_generative(self) -> bool:
        return self.bank is not None and self.g["generative_prob"] > 0 and self.bank.num_generative > 0

    def real(self, idx: np.ndarray) -> torch.Tensor:
        if self.images is not None:
            return self.images[torch.from_numpy(idx)]
        from gensis.data.transforms import to_tensor

        return torch.stack([to_tensor(self.ds.get(int(i))) for i in idx])

    def generative(self, idx: np.ndarray, like: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """One random synthetic image per sample, resized like the real batch; and which samples use it."""
        use = self.rng.random(len(idx)) < self.g["generative_prob"]
        k = self.rng.integers(0, self.bank.num_generative, len(idx))
        syn = self.bank.generative_batch(idx, k)  # (B, 3, h, w) uint8
        return _match_size(syn, like), use

    def interpolation(self, idx: np.ndarray, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(I_int, I_2, alpha) for each sample; uint8 (B,3,H,W), uint8 (B,3,H,W), float (B,)."""
        alpha = self.rng.choice(self.alphas, len(idx))
        if self.interp == "bank":
            img_int, sec = self.bank.interpolated_batch(idx, alpha)
            img_int = _match_size(img_int, like)
            img2 = _match_size(self.real(sec), like)
        else:  # pixel
            sec = _random_secondary(idx, len(self.ds), self.rng, getattr(self.ds, "groups", None))
            img2 = _match_size(self.real(sec), like)
            a = torch.from_numpy(alpha).float().view(-1, 1, 1, 1)
            img_int = (a * like.float() + (1 - a) * img2.float()).round().clamp(0, 255).to(torch.uint8)
        return img_int, img2, torch.from_numpy(alpha).float()


def _random_secondary(idx: np.ndarray, n: int, rng: np.random.Generator, groups: np.ndarray | None) -> np.ndarray:
    sec = rng.integers(0, n, len(idx))
    if groups is not None and len(np.unique(groups)) > 1:  # a secondary from another group (slide)
        for j in range(len(idx)):
            while groups[sec[j]] == groups[idx[j]]:
                sec[j] = rng.integers(0, n)
    else:
        sec = np.where(sec == idx, (sec + 1) % n, sec)
    return sec


def _match_size(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(x, list(like.shape[-2:]), antialias=True)


def _save_state(run: RunDir, student, teacher, opt, loss_fn, aug, gen, epoch: int, step: int) -> None:
    tensors = {"center": loss_fn.center, "rng_torch": torch.get_rng_state(), "rng_aug": aug.state()}
    meta = {"epoch": epoch, "step": step}
    if gen is not None:
        meta["gen_rng"] = gen.rng.bit_generator.state
    save_checkpoint(run / CHECKPOINT, {"student": _unwrap(student), "teacher": teacher}, {"adamw": opt},
                    tensors, meta)


def _unwrap(m: nn.Module) -> nn.Module:
    return m.module if isinstance(m, DDP) else m


def export_backbones(run: RunDir, student, teacher, cfg: dict) -> None:
    """Final weights for evaluation: the teacher backbone (DINO's choice) and the student backbone."""
    meta = {"arch": cfg["model"]["arch"], "image_size": cfg["data"]["image_size"]}
    save_tensors(run / "teacher_backbone.safetensors", teacher.backbone.state_dict(), meta)
    save_tensors(run / "student_backbone.safetensors", _unwrap(student).backbone.state_dict(), meta)


def train(cfg: dict, data: str, out: str | Path, resume: bool = False, bank_path: str | None = None,
          quiet: bool = False, on_epoch_end=None) -> RunDir:
    """Run (or resume) a pretraining run; returns its run directory.

    ``on_epoch_end(epoch, teacher_backbone)`` (rank 0 only) may return a dict that is logged to metrics.
    """
    t_cfg, o = cfg["train"], cfg["optim"]
    device, dist_info, bf16, seed = setup_training(t_cfg)
    seed_everything(seed + dist_info.rank)

    ds = open_data(data, "train", cfg["data"]["val_fraction"], cfg["data"]["split_seed"], cfg["data"]["limit"])
    if o["batch_size"] % dist_info.world:
        raise UserError(f"optim.batch_size={o['batch_size']} must be divisible by the {dist_info.world} processes")
    if len(ds) < o["batch_size"]:
        raise UserError(f"dataset has {len(ds)} training images, fewer than optim.batch_size={o['batch_size']}")
    size = cfg["data"]["image_size"]
    load_size = cfg["data"]["load_size"]
    batches = ImageBatches(ds, o["batch_size"], seed, dist_info.rank, dist_info.world, load_size,
                           cfg["data"]["num_workers"])
    if batches._array is None and load_size is None:  # folders: one size per batch
        batches.load_size = int(round(size * 8 / 7))
    niter = len(batches)

    bank = None
    if bank_path is not None:
        from gensis.bank import BankReader

        bank = BankReader(bank_path)
        bank.check_dataset(ds)
    gen_on = bank is not None or cfg["gen"]["interp"] == "pixel"
    gen = GenViews(cfg, ds, batches._array, bank, seed) if gen_on else None

    student, teacher = build_dino(cfg)
    student, teacher = student.to(device), teacher.to(device)
    loss_fn = DINOLoss(cfg["dino"]["out_dim"], cfg["dino"]["student_temp"], cfg["dino"]["center_momentum"]).to(device)
    opt = torch.optim.AdamW(param_groups(student), fused=device.type == "cuda")
    aug = BatchDINOAugmentation(MultiCropConfig.from_cfg(cfg["aug"], size), seed * 1000 + dist_info.rank, device)
    sched = Schedules.from_cfg(cfg, niter)

    run = RunDir(out)
    start_epoch = 0
    if resume and (run / CHECKPOINT).is_file():
        tensors, info = load_checkpoint(run / CHECKPOINT)
        student.load_state_dict(sub_state(tensors, "student"))
        teacher.load_state_dict(sub_state(tensors, "teacher"))
        load_optimizer(opt, tensors, "optim.adamw", info["param_groups"]["adamw"])
        loss_fn.center.copy_(tensors["extra.center"])
        torch.set_rng_state(tensors["extra.rng_torch"])
        aug.set_state(tensors["extra.rng_aug"])
        if gen is not None and "gen_rng" in info["meta"]:
            gen.rng.bit_generator.state = info["meta"]["gen_rng"]
        start_epoch = info["meta"]["epoch"] + 1
    elif resume and dist_info.is_main and not quiet:
        print(f"[gensis] no checkpoint in {out}: starting from scratch", file=sys.stderr)
    if dist_info.is_main:
        inputs = {"data": data, "data_identity": ds.identity}
        if bank is not None:
            inputs["bank_identity"] = bank.identity
        run.start("pretrain", cfg, seed, inputs, resume=resume)
    barrier()
    metrics = MetricsLog(run / "metrics.jsonl", keep_until_step=start_epoch * niter if resume else None) \
        if dist_info.is_main else None

    model = DDP(student) if dist_info.enabled else student
    total = o["epochs"] * niter
    bar = progress(total=total, initial=start_epoch * niter, disable=not dist_info.is_main or quiet,
                   desc="pretrain", unit="it")
    for epoch in range(start_epoch, o["epochs"]):
        t0, n_img = time.time(), 0
        for i, (images, idx) in enumerate(batches.epoch(epoch)):
            it = epoch * niter + i
            for j, g in enumerate(opt.param_groups):
                g["lr"] = sched.lr[it]
                if j == 0:
                    g["weight_decay"] = sched.wd[it]
            temp = float(sched.teacher_temp[epoch])
            loss, parts = training_step(model, teacher, loss_fn, aug, gen, images, idx.numpy(), temp, cfg,
                                        device, bf16)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if o["clip_grad"]:
                clip_gradients(student, o["clip_grad"])
            if epoch < o["freeze_last_layer"]:
                for p in student.head.last_layer.parameters():
                    p.grad = None
            opt.step()
            with torch.no_grad():  # EMA teacher
                m = float(sched.momentum[it])
                for ps, pt in zip(student.parameters(), teacher.parameters()):
                    pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            if not math.isfinite(loss.item()):
                raise RuntimeError(f"loss is {loss.item()} at step {it}; lower optim.lr or enable clipping")
            n_img += len(images) * dist_info.world
            ips = n_img / max(time.time() - t0, 1e-9)
            if dist_info.is_main:
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", img_s=f"{ips:.0f}", refresh=False)
                if it % t_cfg["log_every"] == 0 or i == niter - 1:
                    metrics.log({"step": it, "epoch": epoch, "loss": loss.item(), **parts, "lr": sched.lr[it],
                                 "wd": sched.wd[it], "momentum": m, "teacher_temp": temp, "images_per_s": ips})
        if dist_info.is_main:
            _save_state(run, student, teacher, opt, loss_fn, aug, gen, epoch, (epoch + 1) * niter)
            if on_epoch_end is not None:
                extra = on_epoch_end(epoch, teacher.backbone)
                if extra:
                    metrics.log({"step": (epoch + 1) * niter - 1, "epoch": epoch, **extra})
        barrier()
    bar.close()
    if dist_info.is_main:
        export_backbones(run, student, teacher, cfg)
        run.finish()
    barrier()
    cleanup()
    return run


def training_step(model, teacher, loss_fn: DINOLoss, aug: BatchDINOAugmentation, gen: GenViews | None,
                  images: torch.Tensor, idx: np.ndarray, teacher_temp: float, cfg: dict, device, bf16: bool):
    """Forward pass and loss of one step; returns (loss, dict of logged parts)."""
    x = to_float(images, device)  # (B, 3, H, W) in [0, 1]
    crops = aug(images)  # 2 global + n_local × (B, 3, s, s)
    n_global, batch = 2, len(images)
    disent = None
    if gen is not None:
        if gen.uses_generative:  # replace chosen global views by views of a synthetic image
            syn, use = gen.generative(idx, images)
            syn_views = aug.global_views(to_float(syn, device))
            mask = torch.from_numpy(use).to(device).view(-1, 1, 1, 1)
            for v in gen.g["generative_views"]:
                crops[v] = torch.where(mask, syn_views[v], crops[v])
            if gen.g["local_from_bank"]:
                syn_x = torch.where(mask, to_float(syn, device), x)
                c = aug.cfg
                crops[2:] = [aug.view(syn_x, c.local_size, c.local_scale, 0.5) for _ in range(c.n_local)]
        if gen.interp != "none":
            img_int, img2, alpha = gen.interpolation(idx, images)
            v_int = aug.view(to_float(img_int, device), aug.cfg.global_size, aug.cfg.global_scale, 1.0)
            v_2 = aug.view(to_float(img2, device), aug.cfg.global_size, aug.cfg.global_scale, 1.0)
            disent = (v_int, v_2, alpha.to(device))
    with autocast(device, bf16):
        t_in = crops[:n_global] + ([disent[1]] if disent else [])
        s_in = crops + ([disent[0]] if disent else [])
        with torch.no_grad():
            t_out = teacher(t_in)  # ((n_global [+1])·B, K)
        s_out = model(s_in)  # ((n_crops [+1])·B, K)
    n_s = len(crops) * batch
    loss_dino = loss_fn(s_out[:n_s], t_out[:n_global * batch], teacher_temp, n_global)
    parts = {"loss_dino": loss_dino.item()}
    loss = loss_dino
    if disent:
        # teacher(I_1): the first global view of the real image (a vanilla DINO view of img_1)
        l_dis = disentanglement_loss(loss_fn, s_out[n_s:], t_out[:batch], t_out[n_global * batch:],
                                     disent[2], teacher_temp)
        parts["loss_disent"] = l_dis.item()
        loss = loss + cfg["gen"]["disent_weight"] * l_dis
    return loss, parts
