"""Typed schema of every stage's config: one rule per key, as data, checked before any work starts.

Each family's ``base.yaml`` holds every key with its default. A key with an explicit rule below is checked
against it; a key without one (e.g. a section another module added) is checked against its default's type:
an int default takes ints, a float default ints or floats, a bool default booleans, a str default strings, a
list default lists (of the type of its elements), and a null default anything. Floats must be finite
everywhere. A bad value is one line: ``optim.epochs=0: must be an integer >= 1``.

Rules are plain data (``Rule``), so typed config objects (dataclasses) can later be generated from the same
table; ``rules_for(family)`` returns the merged table of one family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """What one key accepts. ``kind``: int | float | bool | str | list | any."""

    kind: str
    ge: float | None = None          # value >= ge
    gt: float | None = None          # value > gt
    le: float | None = None          # value <= le
    lt: float | None = None          # value < lt
    choices: tuple | None = None     # allowed values (strings); a trailing ``:N`` entry means "prefix + integer"
    nullable: bool = False           # null (None) is allowed too
    item: "Rule | None" = None       # rule of each element (lists)
    length: int | None = None        # exact list length
    nonempty: bool = False           # list must not be empty
    increasing: bool = False         # list elements non-decreasing


def Int(ge=None, gt=None, le=None, lt=None, nullable=False) -> Rule:
    return Rule("int", ge=ge, gt=gt, le=le, lt=lt, nullable=nullable)


def Float(ge=None, gt=None, le=None, lt=None, nullable=False) -> Rule:
    return Rule("float", ge=ge, gt=gt, le=le, lt=lt, nullable=nullable)


def Bool(nullable=False) -> Rule:
    return Rule("bool", nullable=nullable)


def Str(nullable=False) -> Rule:
    return Rule("str", nullable=nullable)


def OneOf(*choices: str, nullable=False) -> Rule:
    return Rule("str", choices=tuple(choices), nullable=nullable)


def List(item: Rule | None = None, length=None, nonempty=False, increasing=False, nullable=False) -> Rule:
    return Rule("list", item=item, length=length, nonempty=nonempty, increasing=increasing, nullable=nullable)


def rules_for(family: str, base: dict) -> dict[str, Rule]:
    """Explicit rules of ``family`` (``COMMON`` ones for keys the family has), by dotted key."""
    from gensis.config import dotted_keys

    keys = set(dotted_keys(base))
    out = {k: r for k, r in COMMON.items() if k in keys}
    out.update(RULES.get(family, {}))
    return out


# families whose top-level ``method`` key selects a registered method (and a preset's ``per_method`` delta):
# family -> "module:REGISTRY" (a dict of names), read when a config is resolved so late registrations count;
# ``gensis.config.load_config`` refuses other names with the valid ones listed
METHOD_REGISTRIES: dict[str, str] = {"pretrain": "gensis.ssl.methods:METHODS"}


def method_names(family: str) -> list[str] | None:
    """The valid values of ``family``'s ``method`` key (None: the family has no method registry)."""
    if family not in METHOD_REGISTRIES:
        return None
    import importlib

    module, attr = METHOD_REGISTRIES[family].split(":")
    return list(getattr(importlib.import_module(module), attr))


DEVICE = OneOf("auto", "cpu", "cuda", "cuda:N")
AMP_MODES = ("auto", "bf16", "off")  # train.amp, --amp, amp= of the Python API (gensis.device.use_bf16)
AMP = OneOf(*AMP_MODES)
PROB = Float(ge=0, le=1)
FRACTION = Float(ge=0, lt=1)
POS_INT = Int(ge=1)
NONNEG_INT = Int(ge=0)
POS_FLOAT = Float(gt=0)
NONNEG_FLOAT = Float(ge=0)
SCALE = List(Float(gt=0, le=1), length=2, increasing=True)

# rules shared by every family that has the key
COMMON: dict[str, Rule] = {
    "data.image_size": POS_INT,
    "data.load_size": Int(ge=1, nullable=True),
    "data.val_fraction": FRACTION,
    "data.split_seed": NONNEG_INT,
    "data.limit": Int(ge=1, nullable=True),
    "data.num_workers": NONNEG_INT,
    "data.skip_bad_images": Bool(),
    "train.seed": NONNEG_INT,
    "train.device": DEVICE,
    "train.amp": AMP,
    "train.threads": Int(ge=1, nullable=True),
    "train.log_every": POS_INT,
    "train.logger": OneOf("jsonl", "tensorboard", nullable=True),
    "optim.epochs": POS_INT,
    "optim.min_updates": Int(ge=1, nullable=True),
    "optim.batch_size": POS_INT,
    "optim.lr": POS_FLOAT,
    "optim.min_lr": NONNEG_FLOAT,
    "optim.warmup_epochs": NONNEG_INT,
    "optim.warmup_steps": NONNEG_INT,
    "optim.weight_decay": NONNEG_FLOAT,
    "optim.weight_decay_end": NONNEG_FLOAT,
    "optim.clip_grad": Float(gt=0, nullable=True),
    "optim.freeze_last_layer": NONNEG_INT,
}

RULES: dict[str, dict[str, Rule]] = {
    "pretrain": {
        "model.arch": Str(),
        "model.patch_size": Int(ge=1, nullable=True),
        "model.embed_dim": Int(ge=1, nullable=True),
        "model.depth": Int(ge=1, nullable=True),
        "model.num_heads": Int(ge=1, nullable=True),
        "model.drop_path_rate": FRACTION,
        "model.init_values": Float(gt=0, nullable=True),
        "model.conv_stem": List(POS_INT),
        "model.init": OneOf("timm", "mimetic", "sincos", "mimetic+sincos"),
        "model.mimetic_qk": List(NONNEG_FLOAT, length=2),
        "model.mimetic_vo": List(NONNEG_FLOAT, length=2),
        "model.sincos_temperature": Float(gt=1),
        "model.sincos_scale": POS_FLOAT,
        "optim.betas": List(Float(ge=0, lt=1), length=2),
        "dino.out_dim": POS_INT,
        "dino.hidden_dim": POS_INT,
        "dino.bottleneck_dim": POS_INT,
        "dino.student_temp": POS_FLOAT,
        "dino.warmup_teacher_temp": POS_FLOAT,
        "dino.teacher_temp": POS_FLOAT,
        "dino.warmup_teacher_temp_epochs": NONNEG_INT,
        "dino.momentum_teacher": PROB,
        "dino.center_momentum": PROB,
        "dino.use_bn_in_head": Bool(),
        "dino.centering": OneOf("centering", "sinkhorn_knopp"),
        "dino.koleo_loss_weight": NONNEG_FLOAT,
        "dino.sk_queue": NONNEG_INT,
        "aug.n_local": NONNEG_INT,
        "aug.local_size": POS_INT,
        "aug.global_scale": SCALE,
        "aug.local_scale": SCALE,
        "aug.jitter": PROB,
        "aug.solarize": PROB,
        "gen.generative_prob": PROB,
        "gen.generative_views": List(Int(ge=0, le=1), nonempty=True),
        "gen.local_from_bank": Bool(),
        "gen.interp": OneOf("none", "bank", "pixel"),
        "gen.alphas": List(PROB, nonempty=True),
        "gen.disent_weight": NONNEG_FLOAT,
        "gen.bank_min_score": Float(ge=-1, le=1, nullable=True),
        "gen.bank_keep_quantile": Float(gt=0, le=1, nullable=True),
        "gen.bank_weighting": OneOf("none", "score"),
        # iBOT, DINOv2, SimCLR (gensis.ssl.methods); other keys of their sections are typed by their defaults
        **{f"ibot.{k}": POS_INT for k in ("out_dim", "patch_out_dim", "hidden_dim", "bottleneck_dim")},
        **{f"ibot.{k}": POS_FLOAT for k in ("student_temp", "warmup_teacher_temp", "teacher_temp",
                                            "warmup_teacher_patch_temp", "teacher_patch_temp")},
        "ibot.warmup_teacher_temp_epochs": NONNEG_INT,
        "ibot.momentum_teacher": PROB,
        "ibot.center_momentum": PROB,
        "ibot.center_momentum2": PROB,
        "ibot.lambda1": NONNEG_FLOAT,
        "ibot.lambda2": NONNEG_FLOAT,
        "ibot.koleo_loss_weight": NONNEG_FLOAT,
        "ibot.pred_ratio": List(FRACTION, nonempty=True),
        "ibot.pred_ratio_var": List(FRACTION, nonempty=True),
        **{f"dinov2.{p}{k}": POS_INT for p in ("", "ibot_")
           for k in ("head_n_prototypes", "head_bottleneck_dim", "head_nlayers", "head_hidden_dim")},
        **{f"dinov2.{k}_loss_weight": NONNEG_FLOAT for k in ("dino", "koleo", "ibot")},
        "dinov2.mask_sample_probability": PROB,
        "dinov2.mask_ratio_min_max": List(FRACTION, length=2, increasing=True),
        "dinov2.centering": OneOf("centering", "sinkhorn_knopp"),
        "dinov2.student_temp": POS_FLOAT,
        "dinov2.center_momentum": PROB,
        "dinov2.momentum_teacher": PROB,
        "dinov2.final_momentum_teacher": PROB,
        "dinov2.warmup_teacher_temp": POS_FLOAT,
        "dinov2.teacher_temp": POS_FLOAT,
        "dinov2.warmup_teacher_temp_epochs": NONNEG_INT,
        "dinov2.layerwise_decay": Float(gt=0, le=1),
        "dinov2.patch_embed_lr_mult": NONNEG_FLOAT,
        "simclr.mlp_dim": POS_INT,
        "simclr.emb_dim": POS_INT,
        "simclr.temperature": POS_FLOAT,
    },
    "eldm": {
        "data.hflip": Bool(),
        "space": OneOf("vq", "pixel"),
        "pixel_patch": POS_INT,
        "ae.model.block_out_channels": List(POS_INT, nonempty=True),
        "ae.model.layers_per_block": POS_INT,
        "ae.model.latent_channels": POS_INT,
        "ae.model.num_vq_embeddings": POS_INT,
        "ae.model.norm_num_groups": POS_INT,
        "ae.optim.epochs": POS_INT,
        "ae.optim.min_updates": Int(ge=1, nullable=True),
        "ae.optim.batch_size": POS_INT,
        "ae.optim.lr": POS_FLOAT,
        "ae.optim.warmup_steps": NONNEG_INT,
        "ae.optim.weight_decay": NONNEG_FLOAT,
        "ae.optim.betas": List(Float(ge=0, lt=1), length=2),
        "ae.loss.disc_start": NONNEG_INT,
        "ae.loss.disc_channels": POS_INT,
        "ae.loss.disc_layers": POS_INT,
        "ae.val_images": NONNEG_INT,
        "unet.block_out_channels": List(POS_INT, nonempty=True),
        "unet.layers_per_block": POS_INT,
        "unet.attention": List(Bool(), nonempty=True),
        "unet.attention_head_dim": POS_INT,
        "unet.norm_num_groups": POS_INT,
        "unet.context_dim": POS_INT,
        "cond.which": OneOf("teacher", "student"),
        "cond.mode": OneOf("cross_attn", "time", "both"),
        "cond.tokens": POS_INT,
        "cond.drop_prob": FRACTION,
        "cond.encode_batch_size": POS_INT,
        "diffusion.timesteps": Int(ge=2),
        "diffusion.beta_schedule": OneOf("scaled_linear", "linear", "squaredcos_cap_v2"),
        "diffusion.beta_start": Float(gt=0, lt=1),
        "diffusion.beta_end": Float(gt=0, lt=1),
        "diffusion.prediction": OneOf("epsilon", "v_prediction"),
        "diffusion.min_snr_gamma": Float(gt=0, nullable=True),
        "ema.decay": PROB,
        "sample.sampler": OneOf("ddim", "dpmpp"),
        "sample.steps": POS_INT,
        "sample.dpmpp_steps": POS_INT,
        "sample.guidance": NONNEG_FLOAT,
        "sample.eta": NONNEG_FLOAT,
        "sample.spacing": OneOf("leading", "trailing", "linspace"),
        "sample.clip": Rule("any"),  # auto | null/false/off/none | a positive number (see eldm.model.resolve_clip)
        "figures.rows": POS_INT,
        "figures.per_image": POS_INT,
        "figures.pairs": POS_INT,
        "figures.alphas": List(PROB, nonempty=True),
        "figures.method": OneOf("slerp", "lerp"),
        "figures.scale": POS_INT,
        "figures.seed": NONNEG_INT,
        "eval.n": POS_INT,
        "eval.batch_size": POS_INT,
        "eval.knn_k": POS_INT,
        "eval.seed": NONNEG_INT,
    },
    "bank": {
        "gen.num_generative": NONNEG_INT,
        "gen.alphas": List(PROB),
        "gen.secondary": OneOf("random", "group", "auto"),
        "gen.interpolation": OneOf("slerp", "lerp"),
        "gen.guidance": Float(ge=0, nullable=True),
        "gen.steps": Int(ge=1, nullable=True),
        "gen.sampler": OneOf("ddim", "dpmpp", nullable=True),
        "gen.image_size": Int(ge=1, nullable=True),
        "gen.seed": NONNEG_INT,
        "storage.codec": OneOf("png", "webp", "jpeg", "raw"),
        "storage.quality": Int(ge=1, le=100),
        "storage.png_level": Int(ge=0, le=9),
        "storage.shard_size": POS_INT,
        "run.device": DEVICE,
        "run.batch_size": POS_INT,
        "run.encode_batch_size": POS_INT,
        "run.writer_threads": POS_INT,
        "run.num_workers": NONNEG_INT,
        "run.threads": Int(ge=1, nullable=True),
    },
    "mil": {
        "model.hidden": POS_INT,
        "model.attn_dim": POS_INT,
        "model.dropout": FRACTION,
        "optim.accumulation": POS_INT,
        "cv.folds": Int(ge=2),  # more folds than slides/patients is refused when the labels are read (mil.cv.kfold)
        "cv.seeds": POS_INT,
        "cv.seed": NONNEG_INT,
        "run.device": DEVICE,
    },
}
