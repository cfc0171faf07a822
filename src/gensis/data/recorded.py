"""The data a run was trained on, as its ``manifest.json`` records it (``inputs.data``): the default ``--data``
of the commands that read a run (``gensis eval knn --encoder RUN``, ``gensis eldm sample|eval --eldm RUN``,
``gensis bank generate --eldm RUN``), so that they never fall back silently to other images."""

from __future__ import annotations

from pathlib import Path

from gensis.errors import UserError


def recorded_data(run: str | Path, option: str, keep_split: bool = False) -> str:
    """The ``--data`` string ``run`` was trained on (without its ``@split`` suffix unless ``keep_split``).

    A UserError naming ``option`` (the flag that gives the data instead, e.g. ``--train DATA``) when the manifest
    records none, or the recorded path no longer exists (moved, deleted, or relative to the folder the run was
    started in). Whether it can be opened and has labels is left to the caller, which opens it anyway.
    """
    from gensis.data.sources import DataSpec
    from gensis.rundir import RunDir

    rd = RunDir(run)
    inputs = rd.manifest().get("inputs", {}) if rd.exists() else {}
    spec = inputs.get("data") if isinstance(inputs, dict) else None
    if not isinstance(spec, str) or not spec:
        raise UserError(f"{run} does not record the data it was trained on (no inputs.data in its "
                        f"manifest.json); pass {option}")
    source = DataSpec.parse(spec).source
    body = source.split(":", 1)[1] if source.startswith("tiles:") else source
    path = Path(body.split("?", 1)[0]).expanduser()
    if ":" not in body and not path.exists():
        if path.is_absolute():
            raise UserError(f"{run} was trained on {source}, which no longer exists (moved or deleted?): pass {option}")
        raise UserError(f"{run} was trained on {source}, a path relative to the folder the run was started in, "
                        f"not found from {Path.cwd()}: run from that folder or pass {option}")
    return spec if keep_split else source


def data_or_recorded(data: str | None, run: str | Path | None, option: str, what: str = "the run",
                     keep_split: bool = False) -> str | None:
    """``data`` when given; else, with a ``run``, the data it was trained on (``recorded_data``), announced in one
    line on stdout (rank 0 only under torchrun); else None (the caller's own default)."""
    if data is not None or run is None:
        return data
    spec = recorded_data(run, option, keep_split)
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(f"data: {spec} (from {what}'s manifest)", flush=True)
    return spec
