"""The interface every self-supervised method implements (DINO, iBOT, DINOv2, SimCLR ...).

How a pretraining step uses a method (``gensis.ssl.train.PretrainTask.step``, one file, top to bottom)::

    spec   = method.view_spec()                      # how many global/local views, whether masks are needed
    views  = augmentation(images)                    # Views(global_views, local_views), normalized floats
    [Gen-] generative replacement of global views; extra named views ("interp", "secondary")
    views.masks = method.sample_masks(B, rng)        # (n_global, B, N) bool, or None
    t_out = method.teacher(Views(views.global_views, extra=teacher_extra))   # no grad; skipped without teacher
    s_out = student(views)                           # student = DDP(method.student) under torchrun
    loss, parts = method.loss(s_out, t_out, step)
    [Gen-] loss += w · disentanglement (through method.disentangle_distill / disentangle_contrastive)
    backward → clip (method.clip_mode) → freeze last layers → optimizer step → EMA of the teacher

Everything else (device, precision, DDP, schedules of lr / weight decay, per-rank random state, checkpoint
and resume, metrics, NaN handling) is the training loop's (``gensis.train.loop``), written once.

How to add a method
-------------------
1. Write ``gensis/ssl/methods/NAME.py`` with a subclass of ``Method``:

   - ``name`` (the ``--method`` value) and ``target`` (``"distillation"`` or ``"contrastive"``, see Gen-).
   - ``__init__(self, cfg)`` builds ``self.student`` (an ``nn.Module`` whose ``forward(views: Views) -> dict``
     returns the named outputs below and which has a ``.backbone`` attribute, the timm ViT that gets exported)
     and ``self.teacher`` (a copy of the student with ``requires_grad_(False)``, updated by the loop as an EMA
     with the per-iteration ``"momentum"`` of ``schedules``), or ``self.teacher = None``. Losses that keep
     state (centers, queues) are submodules with **registered buffers**: every buffer of the method outside
     student and teacher is saved in the checkpoint under its name (``extra_state``) and restored on resume.
   - ``view_spec()``: ``ViewSpec(n_global, n_local, masks, global_size, local_size)`` (sizes default to the
     config's ``data.image_size`` and ``aug.local_size``).
   - ``schedules(epochs, niter)``: per-iteration arrays of the method's own scalars (e.g. ``momentum``,
     ``teacher_temp``); the value at the current iteration is in ``step.values[name]`` and is logged.
   - ``param_groups()``: the student's parameters in groups; optional keys ``lr_mult`` (layer-wise decay),
     ``wd_mult`` (0 for biases and norms) and ``last_layer`` (True: no update during the first
     ``optim.freeze_last_layer`` epochs). The loop sets ``lr = schedule · lr_mult`` and
     ``weight_decay = schedule · wd_mult`` every iteration.
   - ``loss(s_out, t_out, step) -> (loss, parts)``: the scalar to minimize and a dict of named, detached
     scalar tensors to log (no ``.item()``: the loop syncs with the host only when it logs).
   - optionally ``sample_masks`` (iBOT/DINOv2 block masks), ``clip_mode``, ``lr_scale``.
2. Add one line to ``METHODS`` in ``gensis/ssl/methods/__init__.py``; add the method's config section to
   ``configs/pretrain/base.yaml`` (its hyperparameters, typed by their defaults).

Named outputs (what ``student(views)`` / ``teacher(views)`` return)
------------------------------------------------------------------
A dict with at least

    "global": (n_global, B, K)   image-level output of each global view, in the method's *target space*:
                                 raw CLS-head logits for a distillation method, projection (not normalized)
                                 for a contrastive one
    "local":  (n_local, B, K)    the same for the local views (n_local may be 0)
    "extra":  {name: (B, K)}     the same for each named extra view in ``views.extra`` (Gen-)

and any method-specific entries (e.g. ``"global_patch_masked"``: (n, K') patch-head logits at the n masked
tokens of the global views for iBOT's student, ``"global_patch"`` (n_global, B, N, K') at every token for its
teacher). Views are never found by slicing a concatenated batch in the loss: the module that
batches crops for speed (``run_backbone``) splits its result back into named entries.

Patch tokens and masks
----------------------
``gensis.models.backbone.forward_tokens(backbone, x, masks, mask_token)`` returns ``Tokens(cls (B, D),
patch (B, N, D))``; ``run_backbone`` below does it for a list of crops, batching crops of equal size. A
method that sets ``ViewSpec.masks`` gets ``views.masks`` (n_global, B, N) bool (True = masked) from its own
``sample_masks(B, rng)`` for the student's global views, where ``rng`` is a per-rank ``random.Random`` that
the task owns and checkpoints (the generator ``gensis.ssl.masking`` takes); the teacher's views carry no
masks. A method needing more (e.g. the flat indices of masked patches) derives it from ``views.masks``. The mask token is a parameter of the student module (not of the backbone),
so exported backbones stay plain timm ViTs.

Gen- (generative views + disentanglement), written once in ``gensis.ssl.gen``
-----------------------------------------------------------------------------
The Gen- wrapper replaces global views by views of synthetic images (nothing for the method to do) and,
with an interpolation source, adds extra global-size views and one loss term. It only knows ``target``:

- ``"distillation"``: student extra ``"interp"`` = view of I_int; teacher extra ``"secondary"`` = view of I_2.
  The wrapper mixes the *raw* teacher outputs, t = α·t_out["global"][0] + (1 − α)·t_out["extra"]["secondary"]
  (I_1's view is the first global view), and calls ``disentangle_distill(s_int, t, step)``: the method
  applies its own centering + sharpening to t (reading, not updating, its center) and returns the
  cross-entropy against the student output s_int = s_out["extra"]["interp"] (Gen-SIS Eq. 7). Called after
  ``loss`` in the same step (so a center updated by ``loss`` is the one read, as Gen-DINO always did).
- ``"contrastive"``: student extras ``"interp"`` and ``"secondary"``; the wrapper calls
  ``disentangle_contrastive(f_int, f_real, i1, i2, alpha, step)`` with f_int (B, K) = s_out["extra"]["interp"],
  f_real (2B, K) = [s_out["global"][0]; s_out["extra"]["secondary"]] and i1 = 0..B−1, i2 = B..2B−1 the rows
  of each anchor's positives; the method applies the paper's Eq. 8 with its own temperature (and may
  gather negatives across ranks).

Patch-level losses are untouched by Gen- (the paper applies disentanglement to the image-level output only).
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, TypeVar

import numpy as np
import torch
from torch import nn

from gensis.models.backbone import Tokens, forward_tokens


@dataclass(frozen=True)
class ViewSpec:
    """The views a method needs per image and step."""

    n_global: int = 2  # global views; the augmentation recipe yields at most 2
    n_local: int = 0  # local views
    masks: bool = False  # block masks for the student's global views (masked image modeling)
    global_size: int | None = None  # pixels of a global view (None: data.image_size)
    local_size: int | None = None  # pixels of a local view (None: aug.local_size)


@dataclass
class Views:
    """One step's inputs to a student or teacher module, normalized float tensors on the training device."""

    global_views: list[torch.Tensor]  # n_global × (B, 3, G, G)
    local_views: list[torch.Tensor] = field(default_factory=list)  # n_local × (B, 3, L, L)
    masks: torch.Tensor | None = None  # (n_global, B, N) bool, True = patch replaced by the mask token
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # named extra views (B, 3, G, G) (Gen-)

    @property
    def batch_size(self) -> int:
        return self.global_views[0].shape[0]

    def crops(self) -> list[torch.Tensor]:
        """All views in a fixed order: global, local, then extra (in ``extra``'s insertion order)."""
        return [*self.global_views, *self.local_views, *self.extra.values()]

    def split(self, stacked: torch.Tensor) -> dict[str, Any]:
        """(n_views, B, ...) in ``crops()`` order → {"global": (n_global, B, ...), "local": ..., "extra": {...}}."""
        ng, nl = len(self.global_views), len(self.local_views)
        return {"global": stacked[:ng], "local": stacked[ng:ng + nl],
                "extra": {name: stacked[ng + nl + j] for j, name in enumerate(self.extra)}}


@dataclass
class StepInfo:
    """Where the loop is: epoch, global iteration, and the method's scheduled values at this iteration."""

    epoch: int
    it: int
    values: dict[str, float] = field(default_factory=dict)


def run_backbone(backbone: nn.Module, crops: list[torch.Tensor], masks: list[torch.Tensor | None] | None = None,
                 mask_token: torch.Tensor | None = None) -> list[Tokens]:
    """``forward_tokens`` of every crop, running consecutive crops of equal size as one batch (DINO's
    ``MultiCropWrapper``); ``masks[i]`` (B, N) or None per crop. Returns one ``Tokens`` per crop, in order."""
    out: list[Tokens] = []
    masks = masks if masks is not None else [None] * len(crops)
    start = 0
    while start < len(crops):
        end = start
        while (end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]
               and (masks[end] is None) == (masks[start] is None)):
            end += 1
        b = [c.shape[0] for c in crops[start:end]]
        m = None if masks[start] is None else torch.cat(masks[start:end])  # (n·B, N)
        tok = _cut(forward_tokens(backbone, torch.cat(crops[start:end]), m, mask_token))  # (n·B, D), (n·B, N, D)
        out.extend(Tokens(c, p) for c, p in zip(tok.cls.split(b), tok.patch.split(b)))
        start = end
    return out


Cut = tuple[Tokens, Tokens]  # (backbone outputs in the autograd graph, detached leaves that replace them)
_CUTS: ContextVar["list[Cut] | None"] = ContextVar("gensis_backbone_cuts", default=None)


@contextmanager
def cut_backbone_outputs(cuts: list[Cut]) -> Iterator[list[Cut]]:
    """Within this block (on this thread), ``run_backbone`` hands out each crop group's outputs as detached
    leaves and appends (outputs, leaves) to ``cuts``: ``loss.backward()`` then stops at the leaves and
    ``backward_cuts`` runs the backbone's backward of each group, on two threads (``PretrainTask.backward``).
    Same gradients: with two groups bit for bit (each parameter gets one contribution per group and a sum of
    two is the same in either order), with more the groups' sum in another order (rounding)."""
    token = _CUTS.set(cuts)
    try:
        yield cuts
    finally:
        _CUTS.reset(token)


def _cut(tok: Tokens) -> Tokens:
    cuts = _CUTS.get()
    if cuts is None or not torch.is_grad_enabled() or not tok.cls.requires_grad:
        return tok
    leaves = Tokens(tok.cls.detach().requires_grad_(), tok.patch.detach().requires_grad_())
    cuts.append((tok, leaves))
    return leaves


def backward_cuts(cuts: list[Cut]) -> None:
    """The backbone's backward of the cut groups, from the gradients ``loss.backward()`` left in their leaves
    (one autograd call: the groups' gradients are summed before they reach the parameters)."""
    outs, grads = [], []
    for tok, leaves in cuts:
        for out, leaf in ((tok.cls, leaves.cls), (tok.patch, leaves.patch)):
            if leaf.grad is not None:  # an output the loss did not read (DINO's patch tokens) has none
                outs.append(out)
                grads.append(leaf.grad)
    if outs:
        torch.autograd.backward(outs, grads)


M = TypeVar("M", bound=nn.Module)


def student_and_teacher(net: Callable[[float], M], drop_path: float) -> tuple[M, M]:
    """``(student, teacher)``: two networks from ``net(drop_path)``, the teacher without stochastic depth, starting
    from the student's weights and frozen (updated only by the loop's EMA), as DINO/iBOT/DINOv2's main scripts."""
    student, teacher = net(drop_path), net(0.0)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return student, teacher


def default_param_groups(module: nn.Module, last_layer: set[int] = frozenset()) -> list[dict]:
    """DINO's ``get_params_groups``: no weight decay on biases and 1-d parameters (norms); parameters whose
    ``id`` is in ``last_layer`` go to their own group flagged ``last_layer``."""
    decay, no_decay, last = [], [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in last_layer:
            last.append(p)
        elif name.endswith(".bias") or p.ndim == 1:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay}, {"params": no_decay, "wd_mult": 0.0}, {"params": last, "last_layer": True}]
    return [g for g in groups if g["params"]]


class Method(nn.Module):
    """Base class of a self-supervised method (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    target: ClassVar[str] = "distillation"  # "distillation" | "contrastive": what Gen- disentangles
    clip_mode: ClassVar[str] = "per_param"  # gradient clipping: "per_param" (DINO, iBOT) | "global" (DINOv2)

    student: nn.Module
    teacher: nn.Module | None

    def __init__(self, cfg: dict):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def check_config(cls, cfg: dict) -> None:
        """The rules that combine this method's config keys, checked without building anything (a one-line
        ``UserError``): the constructor and ``gensis.configs.whole.check_whole`` (``--print-config``) call it."""

    # -- what the loop needs -------------------------------------------------------------------------------
    def view_spec(self) -> ViewSpec:
        raise NotImplementedError

    def needs_two_images(self) -> str | None:
        """Why a step needs at least two images per process (a BatchNorm in training, KoLeo's nearest
        neighbour), or None when one image is enough; the loop refuses ``optim.batch_size`` below that."""
        koleo = self.cfg.get(self.name, {}).get("koleo_loss_weight", 0)
        return f"{self.name}.koleo_loss_weight={koleo}: KoLeo needs each image's nearest neighbour" if koleo else None

    def schedules(self, epochs: int, niter: int) -> dict[str, np.ndarray]:
        """Per-iteration values (length epochs·niter) of the method's own scalars; ``momentum`` drives the EMA."""
        return {}

    def param_groups(self) -> list[dict]:
        return default_param_groups(self.student)

    def lr_scale(self, batch_size: int) -> float:
        """Multiplier of ``optim.lr`` for the total batch size (DINO's linear rule: batch / 256)."""
        return batch_size / 256.0

    def sample_masks(self, batch_size: int, rng: random.Random) -> torch.Tensor | None:
        """(n_global, B, N) bool masks for the student's global views (only called when ``view_spec().masks``)."""
        return None

    def loss(self, s_out: dict, t_out: dict | None, step: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def eval_backbone(self) -> nn.Module:
        """The backbone exported as ``teacher_backbone.safetensors`` (the one evaluations use)."""
        return (self.teacher if self.teacher is not None else self.student).backbone

    # -- state the checkpoint keeps besides the student and teacher weights ----------------------------------
    def _extra_modules(self) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in self.named_children() if n not in ("student", "teacher")]

    def extra_state(self) -> dict[str, torch.Tensor]:
        """Every buffer of the method outside student and teacher (centers, queues), by name (through
        ``state_dict``, so a module's ``_save_to_state_dict`` hook, e.g. a lazy center update, runs first).
        Student and teacher are not walked: the training loop calls this every step on the deferred
        non-finite check (``FiniteGuard.save_state``)."""
        out = {n: b.detach() for n, b in self._buffers.items() if b is not None and n not in self._non_persistent_buffers_set}
        for name, child in self._extra_modules():
            out.update(child.state_dict(prefix=f"{name}."))
        return out

    def load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_buffers(recurse=False))
        for name, child in self._extra_modules():
            own.update(child.named_buffers(prefix=name))
        missing = sorted(set(self.extra_state()) - set(tensors))
        if missing:
            raise KeyError(f"checkpoint lacks the method state {', '.join(missing)}")
        for name, buf in own.items():
            if name in tensors:
                buf.copy_(tensors[name])

    # -- Gen- hooks (one of the two, according to ``target``) -------------------------------------------------
    def disentangle_distill(self, s_int: torch.Tensor, t_mixed: torch.Tensor, step: StepInfo) -> torch.Tensor:
        """CE(center+sharpen(t_mixed), s_int); t_mixed (B, K) raw mixed teacher logits, s_int (B, K)."""
        raise NotImplementedError(f"{self.name} has no distillation target")

    def disentangle_contrastive(self, f_int: torch.Tensor, f_real: torch.Tensor, i1: torch.Tensor,
                                i2: torch.Tensor, alpha: torch.Tensor, step: StepInfo) -> torch.Tensor:
        """The paper's Eq. 8 with the method's temperature; rows of f_real at i1/i2 are the positives."""
        raise NotImplementedError(f"{self.name} has no contrastive target")
