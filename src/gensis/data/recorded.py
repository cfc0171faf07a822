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
    from gensis.errors import on_main_rank

    if on_main_rank():
        print(f"data: {spec} (from {what}'s manifest)", flush=True)
    return spec


READ_AS = ("skip_bad_images", "val_fraction", "split_seed")  # how a run read its data (not which subset: data.limit)


def recorded_reading(run: str | Path, resolved: dict, overrides: list[str], what: str = "the run") -> list[str]:
    """``data.KEY=VALUE`` overrides that read a run's data as ``run`` read it, for a command whose ``--data`` defaults
    to that run's (``data_or_recorded``): ``READ_AS`` keys of ``run``'s ``config.yaml`` whose value differs from
    ``resolved`` (the command's resolved ``data`` section) and that ``overrides`` do not set; announced in one line
    on stdout (rank 0). So a run pretrained with ``data.skip_bad_images=true`` or another split is followed by an
    E-LDM and a bank that skip the same files and hold out the same images (were: an error on the first broken
    file, or an E-LDM trained on the encoder's held-out images)."""
    from gensis.errors import on_main_rank
    from gensis.rundir import RunDir

    rd = RunDir(run)
    if not (rd / "config.yaml").is_file():
        return []
    data = rd.config().get("data", {})
    given = {o.split("=", 1)[0].strip() for o in overrides}
    out = []
    for key in READ_AS:
        if key in data and key in resolved and f"data.{key}" not in given and data[key] != resolved[key]:
            value = data[key]
            out.append(f"data.{key}={str(value).lower() if isinstance(value, bool) else value}")
    if out and on_main_rank():
        print(f"data read as {what} read it: {' '.join(out)}", flush=True)
    return out
