"""The training loop of every trainer (pretraining of any method, E-LDM denoiser, VQ autoencoder).

A trainer is a small ``Task`` (what to build, one forward + loss, its extra state); ``fit`` does the rest,
once for all of them. One iteration, top to bottom::

    values = task.schedule(it, epoch)              lr / weight decay / momentum ... of this iteration
    guard.save_state()                             deferred check only: centers, buffers as they are
    loss, parts = task.step(model, batch, it, epoch)   forward + loss (model = DDP(task.model) under torchrun)
    zero_grad → task.backward(loss)                 loss.backward() (pretraining on a free core: on two threads)
    grad_norm = clip_gradients(...)                per-parameter (DINO) or global, torch._foreach_* kernels
    task.before_update(epoch)                      e.g. no update of DINO's last layer in the first epoch(s)
    guard.check(loss, grad_norm)                   non-finite → no update from this step on (see below)
    guard.step(optimizer)                          optimizer.step(), skipped on the device flag when deferred
    task.after_update(it, epoch)                   EMA of the teacher / weights (gated by ``guard.skip``), a
                                                   discriminator step (checked and skipped the same way) ...
    guard.restore_state()                          deferred: centers, buffers back where the step is skipped
    every log_every iterations: metrics row (the only host sync of the step on CUDA)

At the end of every epoch: ``task.end_epoch`` (held-out metrics, rank 0, logged), then one checkpoint
(``checkpoint.safetensors``: task modules, optimizers, task tensors, and the random state of *every rank*,
gathered to rank 0). In that order, a run killed after a checkpoint has logged everything of the epochs it
holds, and one killed before it redoes the epoch and logs its rows again (``--resume`` drops the rows past the
checkpoint); the other way round, a kill between the two left the resumed run's ``metrics.jsonl`` without that
epoch's held-out row, and a random draw of ``end_epoch`` would have been missing from the resumed run's random
state. ``--resume`` restores all of it per rank, so a killed run ends with the same weights and metrics as
one never interrupted, under DDP too; it first checks that settings and inputs are the run's own
(``gensis.train.resume``). At the end, ``task.export`` (rank 0) writes the final weights.

Precision: tasks run their forward under ``rt.autocast()`` (bf16 where ``train.amp`` allows it).

Non-finite values (``FiniteGuard``): the loss and the total gradient norm are checked *before* the optimizer
step, in one of two ways (``GENSIS_FINITE_CHECK=auto|every_step|deferred``; ``auto``: every_step on a CPU,
deferred on CUDA):

- every_step: the check is read on the host each step (free on a CPU: no device queue to drain) and a bad
  value stops training before the optimizer step.
- deferred: no step waits for the host. The check sets a sticky flag on the device (``guard.skip``, 0./1.);
  the optimizer step reads it as ``found_inf`` (the fused AdamW kernel skips the update and its step count,
  as under a GradScaler; hence ``rt.fused_optim``), the EMA of the teacher / weights gets a zero weight, a
  second optimizer (the autoencoder's discriminator) is checked and skipped the same way, and the buffers of
  the task's modules and its state tensors (batch-norm statistics, DINO/iBOT centers) are put back as they
  were before the step (``torch.where``, bit for bit). The flag is read at each metrics row and at the end of
  the epoch, so the steps between the bad one and that point leave every weight, optimizer moment and center
  as it was after the last good step.

Either way no non-finite update ever reaches the weights, training stops with one line naming the stage,
epoch and step, nothing of the bad step reaches a checkpoint, and the last good checkpoint is left untouched.
``--resume`` continues it only with the same settings (``gensis.train.resume``), which helps after a transient
cause; a lower learning rate or clipping is a new run (another ``--out``), and the line says so (in a demo's
stage, in the demo's terms: ``gensis.train.next_step``). Under
``torchrun`` every rank reaches the same verdict (the first bad step is all-reduced at each read); rank 0
prints the line, the others exit quietly.

An input that cannot be read while a batch is made (an image file damaged, a slide moved or damaged since it
was tiled: the data's ``UserError``) stops training with that error's line; when the run has a checkpoint the
line ends with how to continue (``gensis.train.next_step``): the file restored as it was, then ``--resume`` from the
epoch after the checkpoint's. Removing or skipping it changes the run's data, which ``--resume`` refuses, so
the hint does not offer that. Without a checkpoint nothing is added: the same command starts the run again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from gensis.checkpoint import load_checkpoint, load_optimizer, save_checkpoint, sub_state
from gensis.configs.added import added_keys
from gensis.device import apply_thread_share, autocast
from gensis.distributed import DistInfo, barrier, cleanup, setup_training
from gensis.errors import UserError, same_on_every_rank
from gensis.progress import progress
from gensis.rundir import MetricsLog, RunDir, make_folder, release_folder, removed_if_left_empty, safetensors_name
from gensis.train.budget import epochs_for, raised_note
from gensis.train.foreach import clip_gradients
from gensis.train.next_step import DIVERGED, UNREADABLE, NextStep, attach
from gensis.train.overlap import overlap_enabled
from gensis.train.resume import check_resume
from gensis.train.rng import capture_rng, restore_rng, seed_everything

CHECKPOINT = "checkpoint.safetensors"
FINITE_CHECKS = ("auto", "every_step", "deferred")


class TrainingDiverged(UserError):
    """A non-finite loss or gradient: one line, exit status 2, the last checkpoint untouched. Every rank of a
    torchrun job raises it at the same step (the verdict is all-reduced): rank 0 prints it."""

    all_ranks = True


@dataclass
class Runtime:
    """Where and how a trainer runs: device, process group, bf16 autocast, base seed."""

    device: torch.device
    dist: DistInfo
    bf16: bool
    seed: int
    deferred_check: bool = False  # non-finite check read on the host only at metrics rows (see module doc)
    overlap: bool = False  # a helper thread on a free CPU core (``gensis.train.overlap``)

    @classmethod
    def setup(cls, train_cfg: dict) -> "Runtime":
        """Device, threads, process group; every global RNG seeded with ``seed`` (the same initial weights on
        every rank). Call ``seed_ranks`` once the models are built."""
        mode = os.environ.get("GENSIS_FINITE_CHECK", "auto").strip() or "auto"
        if mode not in FINITE_CHECKS:
            raise UserError(f"GENSIS_FINITE_CHECK={mode}: must be one of {', '.join(FINITE_CHECKS)}")
        device, info, bf16, seed = setup_training(train_cfg)
        seed_everything(seed)
        deferred = mode == "deferred" or (mode == "auto" and device.type == "cuda")
        return cls(device, info, bf16, seed, deferred, overlap_enabled(device, info.enabled))

    @property
    def fused_optim(self) -> bool:
        """Build AdamW with ``fused=True``: on CUDA (speed), and wherever the finite check is deferred (the
        fused step is the one that can skip itself on a device flag)."""
        return self.device.type == "cuda" or self.deferred_check

    def seed_ranks(self) -> None:
        """Give every rank its own global random streams (rank 0 keeps ``seed``)."""
        if self.dist.rank > 0:
            seed_everything(self.seed + self.dist.rank)

    def autocast(self):
        return autocast(self.device, self.bf16)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


class Task:
    """What a trainer supplies to ``fit``. Attributes are set by the subclass's constructor."""

    stage: str  # manifest stage ("pretrain", "eldm", "eldm-ae")
    desc: str  # progress-bar label
    cfg: dict  # the resolved config (written to the run folder, compared on --resume)
    inputs: dict  # manifest inputs: paths and identities (compared on --resume)
    resume_ignore: tuple[str, ...] = ()  # config keys/sections this stage does not read
    family: str | None = None  # config family (gensis/configs/<family>/base.yaml) whose keys ``cfg`` holds
    epochs: int
    niter: int  # iterations per epoch
    epochs_note: str | None = None  # why ``epochs`` is not the config's (``set_budget``); printed by ``fit``
    model: nn.Module  # the module that gets gradients (wrapped in DDP under torchrun)
    optimizer: torch.optim.Optimizer
    clip_mode: str | None = None  # "per_param" | "global" | None
    clip_value: float | None = None
    log_every: int = 10
    guard: "FiniteGuard | None" = None  # set by ``fit``: ``guard.skip`` for EMA updates, ``guard.check`` and
    #                                     ``guard.step`` for a second optimizer (see ``after_update``)

    def set_budget(self, optim: Mapping[str, Any], niter: int, key: str = "optim") -> None:
        """``niter`` updates per epoch, and ``epochs``: ``optim["epochs"]`` raised to at least
        ``optim["min_updates"]`` updates (``gensis.train.budget``; ``key`` names the section in the note)."""
        self.niter = int(niter)
        self.epochs = epochs_for(optim["epochs"], optim.get("min_updates"), self.niter)
        self.epochs_note = raised_note(optim["epochs"], self.epochs, self.niter, optim.get("min_updates"), key)

    @property
    def resume_added(self) -> Mapping[str, Any]:
        """Keys added after runs were made: {key: the value that reproduces those runs}, from the one registry
        the demo's stage keys read too (``gensis.configs.added``)."""
        return added_keys(self.family) if self.family is not None else {}

    def batches(self, epoch: int) -> Iterable:
        raise NotImplementedError

    def batch_images(self, batch: Any) -> int:
        """Images in a batch (this rank), for the throughput."""
        return len(batch[0])

    def schedule(self, it: int, epoch: int) -> dict[str, float]:
        """Set this iteration's optimizer hyperparameters; returns the values to log."""
        return {}

    def step(self, model: nn.Module, batch: Any, it: int, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward and loss of one batch: (scalar loss, named detached scalars to log)."""
        raise NotImplementedError

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of ``loss`` into the parameters' ``.grad`` (a task may split the work across threads)."""
        loss.backward()

    def before_update(self, epoch: int) -> None:
        pass

    def after_update(self, it: int, epoch: int) -> dict[str, "torch.Tensor | float"]:
        """After the optimizer step (EMA, a second optimizer ...): named scalars to log. An EMA passes
        ``self.guard.skip`` to ``gensis.train.foreach`` (no update once a step was not finite); a second optimizer
        is stepped as ``self.guard.check(it, its loss, its grad norm); self.guard.step(opt)``."""
        return {}

    # checkpointed state
    def state_modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def state_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adamw": self.optimizer}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def generators(self) -> dict[str, "torch.Generator | np.random.Generator"]:
        """This rank's own random generators (saved and restored per rank)."""
        return {}

    # rank 0 only
    def start_message(self) -> str | None:
        return None

    def end_epoch(self, epoch: int) -> dict:
        return {}

    def export(self, run: RunDir) -> dict:
        """Write the final weights; returns extra manifest fields."""
        return {}


class FiniteGuard:
    """Stops training at the first non-finite loss or gradient norm; when deferred, no update of that step or
    of a later one is applied before training stops (see the module docstring)."""

    def __init__(self, task: Task, rt: Runtime, run: RunDir):
        self.task, self.rt, self.run = task, rt, run
        self.every_step = not rt.deferred_check
        self._never = int(np.iinfo(np.int64).max)
        self.never = torch.tensor(self._never, device=rt.device)
        self.first_bad = self.never.clone()
        # deferred: 1. from the first non-finite value on (sticky, updated in place), read by the optimizer
        # step as found_inf and by the tasks' EMA updates; None when every step is read on the host
        self.skip: torch.Tensor | None = None if self.every_step else torch.zeros((), device=rt.device)
        self._saved: tuple[dict[str, torch.Tensor], list[torch.Tensor]] | None = None
        self._slots: list[tuple[nn.Module, str]] | None = None

    def check(self, it: int, *values: torch.Tensor | None) -> None:
        """Record whether every value is finite (on the device: no host sync unless ``every_step``, where a
        non-finite value raises ``TrainingDiverged`` at once)."""
        flags = [torch.isfinite(v.detach().float()).all() for v in values if v is not None]
        if not flags:
            return
        ok = torch.stack(flags).all()
        bad_at = torch.where(ok, self.never, it)  # python int as a wrapped scalar: no host→device copy
        self.first_bad = torch.minimum(self.first_bad, bad_at)
        if self.skip is not None:
            self.skip.masked_fill_(~ok, 1.0)
        if self.every_step:
            self.sync()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; when deferred, the step (update, moments and step count) is skipped on the
        device while ``skip`` is set, as a GradScaler skips it (``found_inf``; the fused AdamW supports it)."""
        if self.skip is None:
            optimizer.step()
            return
        if not getattr(optimizer, "_step_supports_amp_scaling", False):
            self.sync()  # an optimizer that cannot skip itself on a device flag: read the flag on the host
            optimizer.step()
            return
        optimizer.found_inf = self.skip  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf  # type: ignore[attr-defined]

    def _buffers(self) -> list[torch.Tensor]:
        """The buffers of the task's modules, looked up by (module, name) found once: no walk of the module
        tree per step (host time), and a buffer re-assigned by a forward is still the one found."""
        if self._slots is None:
            seen: set[int] = set()
            self._slots = []
            for top in self.task.state_modules().values():
                for mod in top.modules():
                    if id(mod) not in seen:
                        seen.add(id(mod))
                        self._slots += [(mod, name) for name, b in mod._buffers.items() if b is not None]
        return [mod._buffers[name] for mod, name in self._slots]  # type: ignore[misc]

    def save_state(self) -> None:
        """Deferred, before the step: a copy of the task's state tensors (centers ...) and of its modules'
        buffers (batch-norm statistics ...), which the forward and the loss update outside the optimizer."""
        if self.skip is None:
            return
        tensors = {k: v.detach().clone() for k, v in self.task.state_tensors().items()}
        self._saved = (tensors, [torch.cat([b.reshape(-1) for b in group]) for group in _by_dtype(self._buffers())])

    def restore_state(self) -> None:
        """Deferred, after the step: put back what ``save_state`` copied where ``skip`` is set (``torch.where``:
        the values of a good step are kept bit for bit; no host sync)."""
        if self._saved is None:
            return
        tensors, flats = self._saved
        self._saved = None
        bad = self.skip.bool()  # type: ignore[union-attr]
        if tensors:
            now = self.task.state_tensors()
            self.task.load_state_tensors({k: torch.where(bad, v, now[k]) for k, v in tensors.items()})
        for group, old in zip(_by_dtype(self._buffers()), flats):
            kept = torch.where(bad, old, torch.cat([b.reshape(-1) for b in group]))  # (total elements,)
            torch._foreach_copy_(group, [k.view_as(b) for k, b in zip(kept.split([b.numel() for b in group]), group)])

    def sync(self) -> None:
        """Read the flag on the host (all ranks together): raise ``TrainingDiverged`` after a bad step."""
        bad = self.first_bad
        if self.rt.dist.enabled:
            import torch.distributed as dist

            bad = bad.clone()
            dist.all_reduce(bad, op=dist.ReduceOp.MIN)
        it = int(bad.item())
        if it != self._never:
            raise self.diverged(it)

    def _message(self, it: int) -> str:
        epoch = it // self.task.niter
        when = "stopped before the optimizer step" if self.every_step else \
            "stopped; the updates of that step and of the steps after it were skipped and nothing after it was saved"
        return f"{self.task.stage}: the loss or gradient norm is not finite at epoch {epoch}, step {it}; {when}"

    def diverged(self, it: int) -> TrainingDiverged:
        """The error of a bad step ``it``: its line ends with what to do next (``NextStep``: --resume only with
        the same settings, other ones a new run; in a demo, in the demo's terms)."""
        lead = self._message(it)
        e = TrainingDiverged(lead)
        attach(e, next_step(self.task, self.run, DIVERGED, lead))
        return e


def checkpoint_epoch(run: RunDir) -> int | None:
    """The epoch (0-based, as the progress and the messages count) that ``run``'s checkpoint ends, or None when
    it has no readable checkpoint. Reads the file's header only."""
    from safetensors import safe_open

    path = run / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with safetensors_name(path) as name, safe_open(name, framework="pt") as f:
            epoch = json.loads((f.metadata() or {}).get("json", "{}"))["meta"]["epoch"]
        return int(epoch)
    except Exception:  # damaged: --resume would refuse it (``_load``), so no hint offers it
        return None


def next_step(task: Task, run: RunDir, cause: str, lead: str) -> NextStep:
    """What is left of ``run`` after it stopped (``cause``), beside the error's words ``lead``."""
    saved = checkpoint_epoch(run)
    return NextStep(lead, cause, task.family or task.stage, str(run / CHECKPOINT) if saved is not None else None,
                    saved, getattr(task, "cfg", {}))  # a bare Task (tests) may have no cfg


def _with_resume_hint(batches: Iterable[Any], run: RunDir, task: Task) -> Iterator[Any]:
    """``batches``; an input that cannot be read while one is made (a ``UserError``) gets its ``NextStep``:
    with a checkpoint, restore the file, then --resume."""
    it = iter(batches)
    try:
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except UserError as e:
                if not e.all_ranks:  # the same error (type, attributes), its line completed
                    attach(e, next_step(task, run, UNREADABLE, str(e)))
                raise
            yield batch
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _by_dtype(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    return list(groups.values())


def _save(task: Task, rt: Runtime, run: RunDir, epoch: int) -> None:
    """One checkpoint with every rank's random state (all ranks call this; rank 0 writes)."""
    mine = capture_rng(task.generators(), rt.device)
    states = [mine]
    if rt.dist.enabled:
        import torch.distributed as dist

        states = [None] * rt.dist.world
        dist.all_gather_object(states, mine)
    if not rt.is_main:
        return
    tensors = {f"task.{k}": v for k, v in task.state_tensors().items()}
    for r, (t, _) in enumerate(states):
        tensors.update({f"rng.r{r}.{k}": v for k, v in t.items()})
    meta = {"epoch": epoch, "step": (epoch + 1) * task.niter, "world": rt.dist.world, "device": rt.device.type,
            "rng": [js for _, js in states]}
    save_checkpoint(run / CHECKPOINT, task.state_modules(), task.state_optimizers(), tensors, meta)


def _load(task: Task, rt: Runtime, run: RunDir) -> int:
    """Restore a checkpoint (this rank's random state); returns the epoch to start from."""
    path = run / CHECKPOINT
    try:
        tensors, info = load_checkpoint(path)
    except Exception as e:
        raise UserError(f"cannot read {path}: {e}") from None
    meta = info.get("meta", {})
    if "rng" not in meta:
        raise UserError(f"{path} was written by an older gensis (no per-rank random state); start a new run")
    if meta.get("world", 1) != rt.dist.world:
        raise UserError(f"{path} was written by {meta.get('world', 1)} process(es); resume with the same number "
                        f"(now {rt.dist.world})")
    if meta.get("device", rt.device.type) != rt.device.type:
        raise UserError(f"{path} was written on {meta['device']}; resume on the same device type "
                        f"(now {rt.device.type}, set train.device)")
    try:
        for name, module in task.state_modules().items():
            module.load_state_dict(sub_state(tensors, name))
        for name, opt in task.state_optimizers().items():
            load_optimizer(opt, tensors, f"optim.{name}", info["param_groups"][name])
        task.load_state_tensors(sub_state(tensors, "extra.task"))
        restore_rng(sub_state(tensors, f"extra.rng.r{rt.dist.rank}"), meta["rng"][rt.dist.rank], task.generators(),
                    rt.device)
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"{path} does not match this run's models ({str(e).splitlines()[0]}); "
                        f"it is damaged or from another version") from None
    return int(meta["epoch"]) + 1


T = TypeVar("T", bound="Task")


def _claim(run: RunDir, rt: Runtime, resume: bool, stage: str) -> None:
    """Rank 0 locks ``run`` and checks it is this stage's to start (or, with ``resume``, to continue); a no-op on
    the other ranks."""
    if not rt.is_main:
        return
    make_folder(run.path)
    run.claim(stage, resume)
    if not resume and not run.is_done() and (run / CHECKPOINT).is_file():
        release_folder(run.path)  # a fresh start would overwrite the unfinished run's checkpoint
        raise UserError(f"{run.path} holds an unfinished run with a checkpoint (interrupted?): continue it "
                        f"with --resume, or give another --out to start over")


def claim_and_build(run: RunDir, rt: Runtime, resume: bool, build: type[T] | Callable[..., T], *args: Any,
                    stage: str | None = None, **kw: Any) -> T:
    """``build(*args, **kw)`` (a Task class, or a factory with ``stage=``) after rank 0 has claimed ``run``
    (lock + stage check, ``RunDir.claim``): building may write into the folder (the E-LDM trainer writes
    ``cache/``), so a second process on it is refused before anything is written. When building fails, a
    folder this call created is removed again if it holds nothing but the lock. Under torchrun an error here is
    printed once, by rank 0 (``UserError.all_ranks``): a verdict on the folder is rank 0's alone (the others
    stop quietly at their next wait), the build's is every rank's (the same config and inputs)."""
    stage = stage or build.stage  # type: ignore[union-attr]
    with same_on_every_rank():
        if rt.is_main and run.path.exists() and not run.path.is_dir():
            raise UserError(f"--out {run.path} is a file, not a folder: give a new or empty folder")
    with removed_if_left_empty(run.path) if rt.is_main else contextlib.nullcontext():
        with same_on_every_rank():
            _claim(run, rt, resume, stage)
        try:
            with same_on_every_rank():
                return build(*args, **kw)
        except BaseException:
            if rt.is_main:
                release_folder(run.path)
            raise


def _start_epoch(task: Task, rt: Runtime, run: RunDir, resume: bool, quiet: bool) -> int:
    """The epoch ``fit`` starts from: 0, or with ``resume`` the one after the checkpoint's (restored), once the
    run folder is found to be this invocation's to continue."""
    if run.is_done() and not resume:
        raise UserError(f"{run.path} already holds a finished {run.manifest().get('stage')} run; use another --out")
    if not resume:
        return 0
    if rt.is_main and not run.exists():  # a mistyped or empty --out: documented to start, but not unsaid
        print(f"gensis: warning: --resume: {run.path} holds no run to resume: a new run starts there",
              file=sys.stderr)
    check_resume(run, task.stage, task.cfg, task.inputs, task.resume_ignore, task.resume_added)
    if (run / CHECKPOINT).is_file():
        return _load(task, rt, run)
    if rt.is_main and not quiet and run.exists():
        print(f"[gensis] no checkpoint in {run.path}: starting from scratch", file=sys.stderr)
    return 0


def fit(task: Task, rt: Runtime, run: RunDir, resume: bool = False, quiet: bool = False) -> RunDir:
    """Train ``task`` to ``task.epochs`` in ``run`` (or continue it with ``resume``); returns ``run``."""
    main = rt.is_main
    with same_on_every_rank():  # every rank reads the same run folder and checkpoint
        start_epoch = _start_epoch(task, rt, run, resume, quiet)
    if main:
        run.start(task.stage, task.cfg, rt.seed, task.inputs, resume=resume)
        for msg in (task.epochs_note, task.start_message()) if start_epoch == 0 and not quiet else ():
            if msg:
                print(msg, file=sys.stderr)
    barrier()
    niter = task.niter
    metrics = MetricsLog(run / "metrics.jsonl", keep_until_step=start_epoch * niter if resume else None,
                         logger=task.cfg.get("train", {}).get("logger")) if main else None

    model = DDP(task.model) if rt.dist.enabled else task.model
    params = [p for p in task.model.parameters() if p.requires_grad]
    guard = task.guard = FiniteGuard(task, rt, run)
    bar = progress(total=task.epochs * niter, initial=start_epoch * niter, disable=not main or quiet,
                   desc=task.desc, unit="it")
    t_start = time.time()
    for epoch in range(start_epoch, task.epochs):
        t0, n_img = time.time(), 0
        for i, batch in enumerate(_with_resume_hint(task.batches(epoch), run, task)):
            it = epoch * niter + i
            values = task.schedule(it, epoch)
            guard.save_state()
            loss, parts = task.step(model, batch, it, epoch)
            task.optimizer.zero_grad(set_to_none=True)
            task.backward(loss)
            grad_norm = clip_gradients(params, task.clip_mode, task.clip_value)
            task.before_update(epoch)
            guard.check(it, loss, grad_norm)  # before anything is updated
            guard.step(task.optimizer)
            after = task.after_update(it, epoch)  # named scalars (tensors are checked too)
            checked = [v for v in after.values() if torch.is_tensor(v)]
            if checked:
                guard.check(it, *checked)
            guard.restore_state()
            n_img += task.batch_images(batch) * rt.dist.world
            if it % task.log_every == 0 or i == niter - 1:
                guard.sync()
                if main:
                    ips = n_img / max(time.time() - t0, 1e-9)
                    row = {"step": it, "epoch": epoch, "loss": loss.item(),
                           **{k: float(v) for k, v in {**parts, **after}.items()}, **values,
                           "grad_norm": None if grad_norm is None else grad_norm.item(),
                           "images_per_s": ips, "elapsed_s": time.time() - t_start}
                    metrics.log(row)
                    bar.set_postfix(epoch=epoch, loss=f"{row['loss']:.4f}", img_s=f"{ips:.0f}", refresh=False)
            bar.update(1)
            if it % task.log_every == 0 and not rt.overlap:  # (with the helper thread it has its two already)
                apply_thread_share()  # a demo's side lane finished: its threads come back (gensis.device)
        guard.sync()
        if main:  # before the checkpoint: a resume from it never lacks this epoch's rows (see module docstring)
            extra = task.end_epoch(epoch)
            if extra:
                metrics.log({"step": (epoch + 1) * niter - 1, "epoch": epoch, **extra,
                             "elapsed_s": time.time() - t_start})
            if metrics.wants_images and hasattr(task, "sample_images"):  # e.g. the E-LDM's sample grid
                for tag, image in task.sample_images(epoch).items():
                    metrics.log_image(tag, image, (epoch + 1) * niter - 1)
        _save(task, rt, run, epoch)
        barrier()
    bar.close()
    if main:
        metrics.close()
        info = task.export(run)
        run.finish(train_seconds=round(time.time() - t_start, 1), epochs_trained=task.epochs,  # optim.min_updates
                   updates=task.epochs * niter, **(info or {}))
    barrier()
    cleanup()
    return run
