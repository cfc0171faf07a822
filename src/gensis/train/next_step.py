"""How to go on after a training run stopped (a non-finite loss, an input that cannot be read mid-run): the
facts found once, in the words of whoever started the run.

The shared loop (``gensis.train.loop``) finds the facts: why it stopped, whether a good checkpoint is left and
of which epoch, which settings usually cure a divergence. ``NextStep`` keeps them beside the error's own words
(``lead``) and writes the line two ways:

- ``line()``: for a command the user typed (``gensis pretrain``, ``gensis eldm train(-ae)``): ``--resume``
  continues only with the same settings (``gensis.train.resume``), other settings need another ``--out``.
- ``line(demo=True)``: for a stage that a demo runs (``gensis.pipeline.runner``), where the user passes neither
  ``--resume`` nor a stage's ``--out``: the same ``--out`` of the demo continues a stage whose key is unchanged
  (the demo resumes it), and other settings are the demo's ``FAMILY.key=value`` overrides, which change the
  key of every stage of that family (and of the stages that read them), so the demo redoes those from the start.
  A file restored as it was keeps the data's identity (names, sizes) and so the key; one removed or skipped
  changes it.

The error carries its ``NextStep`` (``attach``); ``next_step_of`` finds it again where the line is printed:
by the demo's runner for a stage run in its process, by the CLI for a stage the demo's side lane runs as a
``gensis`` child process (``gensis.pipeline.lanes``), which sets ``IN_DEMO`` in the child's environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DIVERGED = "diverged"  # a non-finite loss or gradient norm
UNREADABLE = "unreadable input"  # an input (image file, slide tile) that cannot be read while a batch is made
IN_DEMO = "GENSIS_DEMO_STAGE"  # set (to the stage's name) for a command that a demo runs as one of its stages


def divergence_knobs(cfg: Mapping[str, Any], prefix: str = "") -> str:
    """The settings that usually cure a diverging run, as the stage's config names them: "a lower optim.lr or
    optim.clip_grad" (clipping only where the stage has the key; "a value for" where it is off, ``null``);
    ``prefix`` before each key (a demo's "pretrain.")."""
    optim = cfg.get("optim")
    lr, clip = f"{prefix}optim.lr", f"{prefix}optim.clip_grad"
    if not isinstance(optim, Mapping) or "clip_grad" not in optim:
        return f"a lower {lr}"
    return f"a lower {lr} or {clip}" if optim["clip_grad"] is not None else f"a lower {lr} or a value for {clip}, now off"


@dataclass(frozen=True)
class NextStep:
    """Why a run stopped and what is left of it; ``line`` says what to do next."""

    lead: str  # the error's own words (what stopped, where)
    cause: str  # DIVERGED | UNREADABLE
    family: str  # the stage's config family ("pretrain", "eldm"): a demo's override prefix
    checkpoint: str | None  # the last good checkpoint's path; None: no readable checkpoint
    epoch: int | None  # the epoch (0-based) that checkpoint ends
    cfg: Mapping[str, Any]  # the stage's resolved config (which knobs it has)

    def line(self, demo: bool = False) -> str:
        """The whole one-line error, for a command the user typed or (``demo``) for a demo's stage."""
        advice = (self._demo if demo else self._command)()
        if advice is None:
            return self.lead
        return f"{self.lead} ({advice})" if self.cause == DIVERGED else f"{self.lead}; {advice}"

    def _command(self) -> str | None:
        knobs = divergence_knobs(self.cfg)
        if self.cause == DIVERGED:
            if self.epoch is not None:  # --resume refuses other settings (gensis.train.resume)
                return (f"the last good checkpoint {self.checkpoint} (epoch {self.epoch}) is untouched; --resume "
                        f"continues it only with the same settings, which helps if the cause was transient; other "
                        f"settings (e.g. {knobs}) need a new run with another --out")
            return f"no checkpoint was written yet; rerun with other settings, e.g. {knobs}; the same --out may be reused"
        if self.epoch is None:  # the same command starts the run again
            return None
        # --resume needs the same files (the data's identity): a file removed or skipped is other data
        return (f"to keep this run, restore that file as it was (removing or skipping it changes the data: another "
                f"--out), then rerun with --resume to continue from epoch {self.epoch + 1} (the checkpoint of epoch "
                f"{self.epoch} is kept)")

    def _demo(self) -> str | None:
        family = self.family
        knobs = divergence_knobs(self.cfg, f"{family}.")
        redo = (f"{family}.* overrides of the demo apply to every {family} stage: the demo redoes those from the "
                f"start, with the stages that read them")
        if self.cause == DIVERGED:
            if self.epoch is not None:
                return (f"the last good checkpoint {self.checkpoint} (epoch {self.epoch}) is untouched; the demo run "
                        f"again with the same --out continues it, with the same settings, which helps if the cause "
                        f"was transient; other settings (e.g. {knobs}) are a fresh start: {redo}")
            return f"no checkpoint was written yet; run the demo again with other settings, e.g. {knobs} ({redo})"
        if self.epoch is None:
            return ("no checkpoint was written yet: once the file can be read (or is removed), the demo run again "
                    "starts the stage again")
        return (f"to keep this stage's progress, restore that file as it was, then run the demo again with the same "
                f"--out: it continues from epoch {self.epoch + 1} (the checkpoint of epoch {self.epoch} is kept); "
                f"removing or skipping the file changes the data, and the demo then redoes the stage from the start")


def attach(error: BaseException, step: NextStep) -> None:
    """Give ``error`` the line of a command the user typed and keep ``step`` with it (``next_step_of``)."""
    error.args = (step.line(),)
    error.gensis_next_step = step  # type: ignore[attr-defined]


def error_line(error: BaseException, demo: bool) -> str | None:
    """``error``'s line for a command the user typed or (``demo``) for a demo's stage; None when ``error`` has
    no ``NextStep`` (its own line holds everywhere)."""
    step = next_step_of(error)
    return None if step is None else step.line(demo)


def next_step_of(error: BaseException) -> NextStep | None:
    """The ``NextStep`` ``attach`` gave ``error``, if any."""
    step = getattr(error, "gensis_next_step", None)
    return step if isinstance(step, NextStep) else None
