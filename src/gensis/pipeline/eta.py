"""The demo's overall progress line: after each stage, stages done of those planned, the time since the pass
started and an estimate of the time left for the whole pipeline (each stage has its own bar; this is the one line
that spans them).

Estimate
    left = elapsed × (shares of the stages still to do) / (shares of the stages this pass ran)

A stage's share is its usual wall time at the preset (``SHARES``: measured on the project's 2-core CPU; the
larger presets take the ``demo`` preset's proportions). Stages found up to date count as done and add no share to
the pace, nor do evaluations (on cached results they take seconds); until a training stage has run, the
usual times are given as they are. The side lane's stages count when they finish, so the pace
is the pipeline's, both lanes together. An estimate, said as one: the pace of the first stages sets it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

# usual wall seconds of each stage role (``role``) at a preset: `demo` from README's timed run (session 21, its
# stages.json; eval and the report: commit 7a46e75's run, "about a minute"), `smoke` from smoke demos on the same
# machine under load (session 14);
# `eval` is per column evaluated
SHARES: dict[str, dict[str, float]] = {
    "demo": {"pretrain": 80, "pixel": 117, "gen": 114, "ae": 48, "eldm": 126, "figures": 9, "fidelity": 30,
             "bank": 128, "eval": 24, "report": 60},
    "smoke": {"pretrain": 14, "pixel": 11, "gen": 11, "ae": 5, "eldm": 23, "figures": 4, "fidelity": 8,
              "bank": 63, "eval": 30, "report": 80},
}


def role(name: str) -> str:
    """The role of a demo stage from its folder name (``dino``, ``simclr-pixel``, ``gen-ibot``, ``eldm-ae`` ...);
    the pseudo-stages ``eval``/``report`` and the early evaluation ``eval-early-X`` keep theirs."""
    if name == "eldm-ae":
        return "ae"
    if name.startswith("eval"):
        return "eval"
    for suffix, r in (("-figures", "figures"), ("-eval", "fidelity")):
        if name.endswith(suffix):
            return r
    if name == "report":
        return "report"
    if name.startswith("eldm"):
        return "eldm"
    if name.startswith("bank"):
        return "bank"
    if name == "gendino" or name.startswith("gen-"):
        return "gen"
    if name == "pixel" or name.endswith("-pixel"):
        return "pixel"
    return "pretrain"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


class Overall:
    """Stages planned for one pass (name -> share); ``finished(name, ran)`` records one and returns the line."""

    def __init__(self, preset: str, planned: Sequence[tuple[str, float]], now: float | None = None,
                 passes_after: int = 0):
        """``planned``: (stage name, how many units of its role: 1, or the columns an evaluation scores).
        ``passes_after``: passes of the same plan still to come (``--seeds``: the seeds after this one), each
        expected to take as long as this one: the line then also gives the time left for the whole demo."""
        shares = SHARES.get(preset, SHARES["demo"])
        self.passes_after = passes_after
        self.preset = preset
        self.share = {name: shares[role(name)] * units for name, units in planned}
        self.done: set[str] = set()
        self.ran = 0.0  # shares of the stages this pass ran
        self.start = time.time() if now is None else now
        self._lock = threading.Lock()

    def finished(self, name: str, ran: bool, now: float | None = None) -> str:
        """Record stage ``name`` as done (``ran``: run in this pass, else found up to date); the progress line."""
        with self._lock:
            if name not in self.share:
                self.share[name] = SHARES.get(self.preset, SHARES["demo"])[role(name)]
            if name not in self.done:
                self.done.add(name)
                # an evaluation reruns on cached results in seconds: its time says nothing of the pace
                self.ran += self.share[name] if ran and role(name) != "eval" else 0.0
            elapsed = (time.time() if now is None else now) - self.start
            left = sum(s for n, s in self.share.items() if n not in self.done)
            line = f"[demo] {len(self.done)}/{len(self.share)} stages done, {_duration(elapsed)} elapsed"
            if left <= 0 and not self.passes_after:
                return line
            # seconds per unit of share: this pass's, else (no training ran yet) the usual times as they are
            pace = elapsed / self.ran if self.ran > 0 else 1.0
            text = f"about {_duration(pace * left)} left"
            if self.passes_after:
                whole = pace * (left + self.passes_after * sum(self.share.values()))
                after = f"{self.passes_after} seed{'s' if self.passes_after > 1 else ''} after it"
                text += f" for this seed, {_duration(whole)} with the {after}"
            how = "estimate from" if self.ran > 0 else "no stage trained yet:"
            return line + f", {text} ({how} the '{self.preset}' preset's usual stage times)"
