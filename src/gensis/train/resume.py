"""``--resume`` only continues the same run: same stage, same settings, same inputs.

The run folder's ``config.yaml`` and ``manifest.json`` (inputs with their identities) are compared with the
new invocation; any difference is refused with one line listing every differing key and input. Keys that
only change speed or logging may differ (``SPEED_ONLY``), as may sections a stage does not read (``ignore``,
e.g. the ``ae`` section for ``eldm train``), and so may a key added to the config after the run was started,
when it is absent from the run's config and set to the value that reproduces the run (``added``: the
stage's family in the registry ``gensis.configs.added.ADDED``, e.g. ``cond.tokens: 1`` for ``eldm train``;
the demo's stage keys read the same registry). ``train.device`` and ``train.amp`` must match: they change the
numbers (and a checkpoint's random state belongs to its device type).
An input ``x`` that has an ``x_identity`` (a hash of its content) is compared by identity only, so a moved
dataset or run folder with the same content resumes. An input that also has an ``x_layout`` (which files, with
which labels, in which split: ``ImageSet.layout``) in both manifests is compared by layout instead: a damaged
image replaced by a fixed one (other bytes) resumes, other files, labels or another split are refused. The
manifest keeps ``x_identity`` (the content) for provenance.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from gensis.config import flatten
from gensis.configs.added import reproduces_old
from gensis.errors import UserError
from gensis.rundir import RunDir

SPEED_ONLY = ("data.num_workers", "train.threads", "train.log_every", "train.logger", "cond.encode_batch_size")


def _short(v) -> str:
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= 40 else s[:37] + "..."


def resume_differences(old_cfg: dict, new_cfg: dict, old_inputs: dict, new_inputs: dict,
                       ignore: Iterable[str] = (), added: Mapping[str, Any] | None = None) -> list[str]:
    """'key (old → new)' for every setting and input that differs (speed-only and ignored keys excepted, and
    keys of ``added`` absent from ``old_cfg`` whose new value is the one that reproduces the old run)."""
    skip = tuple(SPEED_ONLY) + tuple(ignore)
    added = added or {}
    a, b = flatten(old_cfg), flatten(new_cfg)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if k in skip or any(k.startswith(p.rstrip(".") + ".") for p in skip):
            continue
        if k not in a and k in added and k in b and reproduces_old(added[k], b[k]):
            continue  # added to the config after this run was started, at the value the run had
        if a.get(k, "<absent>") != b.get(k, "<absent>"):
            diffs.append(f"{k} ({_short(a.get(k, '<absent>'))} -> {_short(b.get(k, '<absent>'))})")
    for k in sorted(set(old_inputs) | set(new_inputs)):
        if f"{k}_identity" in old_inputs or f"{k}_identity" in new_inputs:
            continue  # compared by content
        if k.endswith("_identity"):
            lay = k.removesuffix("_identity") + "_layout"
            if lay in old_inputs and lay in new_inputs:
                continue  # compared by layout (file names, labels, split), not bytes
        if k.endswith("_layout"):
            if k not in old_inputs or k not in new_inputs:
                continue  # an older manifest: compared by identity
            if old_inputs[k] != new_inputs[k]:
                diffs.append(f"input {k.removesuffix('_layout')} (other files, labels or split)")
            continue
        if old_inputs.get(k) == new_inputs.get(k):
            continue
        name = k.removesuffix("_identity")
        if k not in new_inputs:
            diffs.append(f"input {name} (given before, not now)")
        elif k not in old_inputs:
            diffs.append(f"input {name} (not given before)")
        elif k.endswith("_identity"):
            diffs.append(f"input {name} (content differs)")
        else:
            diffs.append(f"input {k} ({_short(old_inputs[k])} -> {_short(new_inputs[k])})")
    return diffs


def check_resume(run: RunDir, stage: str, cfg: dict, inputs: dict, ignore: Iterable[str] = (),
                 added: Mapping[str, Any] | None = None) -> None:
    """Raise a one-line ``UserError`` unless ``run`` can be resumed by this invocation (nothing to compare in
    a folder without a manifest: the run starts from scratch)."""
    if not run.exists():
        return
    m = run.manifest()
    if m.get("stage") != stage:
        from gensis.folder_kind import describe

        raise UserError(f"--resume: {run.path} holds {describe(str(m.get('stage')))}, not {describe(stage)}; "
                        f"use another --out")
    if run.killed_before_config():  # killed between its manifest and its config.yaml: nothing to compare
        return
    diffs = resume_differences(run.config(), cfg, m.get("inputs", {}), inputs, ignore, added)
    if diffs:
        raise UserError(f"--resume: {run.path} was started with other settings or inputs: {'; '.join(diffs)}. "
                        f"Resume with the same ones, or use another --out")
