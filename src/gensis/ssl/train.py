"""``gensis pretrain``: any registered SSL method (``--method``, default DINO), and its Gen- variant when a
bank (or the pixel-interpolation ablation) is given.

One training step, top to bottom (``PretrainTask.step``; the loop around it is ``gensis.train.loop``):

    images (B,3,H,W) uint8  ──batch_augment──▶ Views: n_global global + n_local local crops of the real images
    [Gen-] chosen global views replaced, per sample with prob. p, by views of a synthetic image;
           extra views "interp" (of I_int) and "secondary" (of I_2)                         (``gensis.ssl.gen``)
    [masks] the method's block masks for the student's global views (iBOT, DINOv2)
    teacher(global views [+ secondary])  ──▶ t_out     (EMA of the student, no gradient; if the method has one)
    student(all views [+ interp])        ──▶ s_out     named outputs ("global", "local", "extra", ...)
    loss = method.loss(s_out, t_out) [+ λ · disentanglement]
    (loop) backward → clip → no last-layer update in the first epoch(s) → AdamW step → EMA of the teacher

The first three lines (``PretrainTask.prepare``: crops, Gen- views, masks) make a batch's ``StepInputs``. On a
CPU with a free core (``gensis.train.overlap``) they run one batch ahead on a helper thread, the teacher's forward
runs there next to the student's, and the backward of the backbone is split by crop size (globals here, the
rest there, ``PretrainTask.backward``): the same results as in order on one thread (bit for bit with two crop
sizes; the Gen- extra views add a third group, whose gradients are then summed in another order).

Schedules (per iteration): lr (linear warm-up + cosine), weight decay (cosine), and the method's own
(teacher momentum, teacher temperature ...). All as in DINO's ``main_dino.py``.
"""

from __future__ import annotations

import random
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from gensis.configs.whole import check_whole
from gensis.data.batch_augment import BatchDINOAugmentation
from gensis.data.loader import ImageBatches, check_training_batch
from gensis.data.sources import open_data
from gensis.data.transforms import MultiCropConfig
from gensis.errors import UserError
from gensis.models.backbone import (check_patch_multiple, fused_attention_for_training, model_patch_size,
                                    set_fused_attention)
from gensis.rundir import RunDir, save_tensors
from gensis.ssl.gen import GenViews
from gensis.ssl.methods import build_method
from gensis.ssl.methods.base import Method, StepInfo, Views, backward_cuts, cut_backbone_outputs
from gensis.ssl.schedules import cosine_schedule
from gensis.train.foreach import ema_update
from gensis.train.loop import Runtime, Task, claim_and_build, fit
from gensis.train.overlap import Overlap, done_now


@dataclass
class StepInputs:
    """What a step needs besides the models, made from one batch of images by ``PretrainTask.prepare``."""

    views: Views  # the student's views: crops, Gen- extras, masks
    teacher_extra: dict[str, torch.Tensor]  # the teacher's extra views (Gen-: "secondary")
    alpha: torch.Tensor | None  # (B,) interpolation weights (Gen- with interpolation), else None
    n_images: int  # images of the batch (this rank)


def check_images_per_process(method: Method, batch_size: int, world: int) -> None:
    """A UserError when each of the ``world`` processes would get one image per step and ``method`` needs two (a
    BatchNorm in training raised a ValueError traceback; KoLeo's nearest neighbour made the loss non-finite)."""
    why = method.needs_two_images()
    if why and batch_size // world < 2:  # every rank's verdict: rank 0 alone prints it (``all_ranks``)
        where = f" on each of the {world} processes" if world > 1 else ""
        err = UserError(f"optim.batch_size={batch_size} is {batch_size // world} image per step{where}, and "
                        f"{method.name} needs at least 2 ({why}): set optim.batch_size={2 * world} or more")
        err.all_ranks = True
        raise err


class PretrainTask(Task):
    """Pretraining of ``cfg['method']`` (+ Gen- when ``gen`` is given) as a loop ``Task``."""

    stage, desc, family = "pretrain", "pretrain", "pretrain"

    def __init__(self, cfg: dict, data: str, rt: Runtime, bank_path: str | None = None, on_epoch_end=None):
        o = cfg["optim"]
        self.cfg, self.rt, self.on_epoch_end = cfg, rt, on_epoch_end
        world, rank, seed = rt.dist.world, rt.dist.rank, rt.seed
        check_whole("pretrain", cfg)  # the rules combining keys, before reading any image (as --print-config)
        ds = open_data(data, "train", cfg["data"]["val_fraction"], cfg["data"]["split_seed"], cfg["data"]["limit"],
                       cfg["data"].get("skip_bad_images", False))
        check_training_batch(len(ds), o["batch_size"], world, cfg["data"].get("limit"))
        size = cfg["data"]["image_size"]
        load_size = cfg["data"]["load_size"]
        self.loader = ImageBatches(ds, o["batch_size"], seed, rank, world, load_size, cfg["data"]["num_workers"])
        if self.loader._array is None and load_size is None:  # folders: one size per batch
            self.loader.load_size = int(round(size * 8 / 7))
        self.set_budget(o, len(self.loader))  # epochs: optim.epochs, more on a small set (optim.min_updates)
        self.log_every = int(cfg["train"]["log_every"])

        bank = None
        if bank_path is not None:
            from gensis.bank import BankReader
            from gensis.errors import reading

            with reading(f"the bank {bank_path}"):  # --bank: an input; a refused read says so
                bank = BankReader(bank_path)
                bank.check_dataset(ds)
        self.inputs = {"data": data, "data_identity": ds.identity, "data_layout": ds.layout}
        if bank is not None:
            self.inputs["bank_identity"] = bank.identity
        gen_on = bank is not None or cfg["gen"]["interp"] == "pixel"
        self.gen = GenViews(cfg, ds, self.loader._array, bank, seed, rank) if gen_on else None

        self.method: Method = build_method(cfg).to(rt.device)  # identical initial weights on every rank
        check_images_per_process(self.method, o["batch_size"], world)
        set_fused_attention(self.method, fused_attention_for_training(rt.device, rt.bf16))  # CPU bf16: explicit
        rt.seed_ranks()
        self.model = self.method.student
        self.spec = self.method.view_spec()
        if cfg["gen"]["local_from_bank"] and not self.spec.n_local and rt.is_main:
            why = "aug.n_local=0" if not int(cfg["aug"]["n_local"]) else f"{self.method.name} uses none"
            print(f"gensis: warning: gen.local_from_bank=true has no effect: there are no local crops ({why})",
                  file=sys.stderr)
        self.clip_mode, self.clip_value = self.method.clip_mode, o["clip_grad"]
        self.optimizer = torch.optim.AdamW(self.method.param_groups(), betas=tuple(o.get("betas", (0.9, 0.999))),
                                           fused=rt.fused_optim)
        self.frozen = [p for g in self.optimizer.param_groups if g.get("last_layer") for p in g["params"]]
        if self.method.teacher is not None:  # EMA pairs, fixed once
            self.ema_pairs = (list(self.method.teacher.parameters()), list(self.method.student.parameters()))
        crops = MultiCropConfig.from_cfg(cfg["aug"], self.spec.global_size or size)
        crops.n_local = self.spec.n_local
        crops.local_size = self.spec.local_size or crops.local_size
        vit = next((m for m in self.model.modules() if hasattr(m, "patch_embed")), None)
        check_patch_multiple(self._crop_sizes(crops), model_patch_size(vit) if vit is not None else None)
        self.aug = BatchDINOAugmentation(crops, seed * 1000 + rank, rt.device)
        self.mask_rng = random.Random(seed * 1000 + 99 + rank)  # the method's block masks
        self.overlap = Overlap(rt.overlap)  # a helper thread on a free CPU core, or inline

        lr = o["lr"] * self.method.lr_scale(o["batch_size"])
        self.sched = {"lr": cosine_schedule(lr, o["min_lr"], self.epochs, self.niter, o["warmup_epochs"]),
                      "wd": cosine_schedule(o["weight_decay"], o["weight_decay_end"], self.epochs, self.niter),
                      **self.method.schedules(self.epochs, self.niter)}

    @staticmethod
    def _crop_sizes(crops: MultiCropConfig) -> dict[str, int]:
        """The crop sizes the backbone sees, by the config key that sets them (local ones only if used)."""
        sizes = {"data.image_size": crops.global_size}
        return {**sizes, "aug.local_size": crops.local_size} if crops.n_local else sizes

    def start_message(self) -> str | None:
        """The bank's fidelity filter (how many entries it keeps): printed by ``fit`` unless ``--quiet``."""
        return self.gen.filter_message if self.gen is not None else None

    # -- one iteration --------------------------------------------------------------------------------------
    def batches(self, epoch: int):
        """This epoch's ``StepInputs``, each made while the step before it runs (when ``rt.overlap``)."""
        return self.overlap.prefetch(self.prepare, self.loader.epoch(epoch))

    def batch_images(self, batch: StepInputs) -> int:
        return batch.n_images

    def schedule(self, it: int, epoch: int) -> dict[str, float]:
        values = {k: float(v[it]) for k, v in self.sched.items()}
        for g in self.optimizer.param_groups:
            g["lr"] = values["lr"] * g.get("lr_mult", 1.0)
            g["weight_decay"] = values["wd"] * g.get("wd_mult", 1.0)
        self.values = values
        return values

    def prepare(self, batch) -> StepInputs:
        """Crops, Gen- views and masks of one batch (uint8 images (B, 3, H, W), dataset indices (B,)); draws
        from the task's own generators only (augmentation, Gen-, masks), in the same order every time."""
        images, idx = batch
        crops = self.aug(images)  # n_global (2) + n_local × (B, 3, s, s)
        views = Views(crops[:self.spec.n_global], crops[2:])
        teacher_extra, alpha = {}, None
        if self.gen is not None:
            teacher_extra, alpha = self.gen.add_views(views, images, idx.numpy(), self.aug, self.method)
        if self.spec.masks:
            views.masks = self.method.sample_masks(len(images), self.mask_rng)
        return StepInputs(views, teacher_extra, alpha, len(images))

    def _teacher_forward(self, views: Views, extra: dict[str, torch.Tensor]) -> dict:
        with self.rt.autocast(), torch.no_grad():  # both thread-local: set here, on whichever thread runs it
            return self.method.teacher(Views(views.global_views, extra=extra))

    def step(self, model: nn.Module, batch: StepInputs, it: int, epoch: int):
        views, alpha = batch.views, batch.alpha
        info = StepInfo(epoch, it, self.values)
        t_job = None
        # the teacher's forward on the helper thread while the student runs here (rt.overlap); under bf16 here,
        # first: a bf16 forward beside the student's changed the student's gradients from run to run on a CPU
        if self.method.teacher is not None and self.rt.bf16:
            t_job = done_now(self._teacher_forward, views, batch.teacher_extra)
        elif self.method.teacher is not None:
            t_job = self.overlap.submit(self._teacher_forward, views, batch.teacher_extra)
        # backbone outputs whose backward runs in two halves: only with a second crop group (local or extra views)
        self._cuts = [] if self.overlap.enabled and (views.local_views or views.extra) else None
        with self.rt.autocast(), (cut_backbone_outputs(self._cuts) if self._cuts is not None else nullcontext()):
            s_out = model(views)
        t_out = t_job.result() if t_job is not None else None
        loss, parts = self.method.loss(s_out, t_out, info)
        if alpha is not None:
            l_dis = self.gen.loss(self.method, s_out, t_out, alpha, info)
            parts["loss_disent"] = l_dis.detach()
            loss = loss + self.cfg["gen"]["disent_weight"] * l_dis
        return loss, parts

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``; on a free core (``rt.overlap``) it stops at the backbone outputs and the backbone's
        backward runs in two halves at once: the first crop group's here, the other groups' on the helper thread
        (the autograd engine runs CPU work on the thread that calls it; ``.grad`` accumulation is locked)."""
        loss.backward()
        cuts, self._cuts = getattr(self, "_cuts", None), None
        if not cuts:
            return
        job = self.overlap.submit(backward_cuts, cuts[1:]) if len(cuts) > 1 else None
        backward_cuts(cuts[:1])
        if job is not None:
            job.result()

    def before_update(self, epoch: int) -> None:
        if epoch < self.cfg["optim"]["freeze_last_layer"]:
            for p in self.frozen:
                p.grad = None

    def after_update(self, it: int, epoch: int) -> dict:
        if self.method.teacher is not None:
            ema_update(*self.ema_pairs, self.values["momentum"], skip=self.guard.skip if self.guard else None)
        return {}

    # -- state ---------------------------------------------------------------------------------------------
    def state_modules(self) -> dict[str, nn.Module]:
        mods = {"student": self.method.student}
        if self.method.teacher is not None:
            mods["teacher"] = self.method.teacher
        return mods

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"method.{k}": v for k, v in self.method.extra_state().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.method.load_extra_state({k.removeprefix("method."): v for k, v in tensors.items()})

    def generators(self) -> dict:
        g = {"aug": self.aug, "masks": self.mask_rng}
        if self.gen is not None:
            g["gen"] = self.gen.rng
        return g

    def end_epoch(self, epoch: int) -> dict:
        if self.on_epoch_end is None:
            return {}
        return self.on_epoch_end(epoch, self.method.eval_backbone()) or {}

    def export(self, run: RunDir) -> dict:
        """Final weights for evaluation: the teacher backbone (DINO's choice; the student's for methods
        without a teacher) and the student backbone."""
        meta = {"arch": self.cfg["model"]["arch"], "image_size": self.cfg["data"]["image_size"],
                "method": self.cfg["method"]}
        save_tensors(run / "teacher_backbone.safetensors", self.method.eval_backbone().state_dict(), meta)
        save_tensors(run / "student_backbone.safetensors", self.method.student.backbone.state_dict(), meta)
        return {}


def train(cfg: dict, data: str, out: str | Path, resume: bool = False, bank_path: str | None = None,
          quiet: bool = False, on_epoch_end=None) -> RunDir:
    """Run (or resume) a pretraining run; returns its run directory.

    ``on_epoch_end(epoch, eval_backbone)`` (rank 0 only) may return a dict that is logged to metrics.
    """
    if bank_path is None and cfg["gen"]["interp"] == "bank":  # before anything is built or written
        raise UserError("gen.interp=bank needs --bank BANK (baseline: gen.interp=none; ablation: --interp pixel)")
    rt = Runtime.setup(cfg["train"])
    run = RunDir(out)
    task = claim_and_build(run, rt, resume, PretrainTask, cfg, data, rt, bank_path, on_epoch_end)
    try:
        return fit(task, rt, run, resume=resume, quiet=quiet)
    finally:
        task.overlap.close()
