"""``gensis mil predict``: slide predictions of a trained MIL run (mean over its fold/seed models) + heatmaps."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from gensis.errors import UserError
from gensis.mil.bags import list_bags, read_bag

SOURCE = "predict.json"  # the run and features a predictions folder was made from (written after predictions.csv)


def predict_slides(run: str | Path, feats: str | Path, out: str | Path, heatmaps: bool = True,
                   slides: list[str] | None = None) -> list[dict]:
    """Predict every bag of ``feats`` (or the named ``slides``) with every model of ``run``; average the
    probabilities and attention. Writes ``out/predictions.csv``, ``out/predict.json`` (the run and features) and
    ``out/heatmaps/<slide>.png``. A rerun into ``out`` takes the same run and features: its slides' rows are
    added or redone, the others' kept; another run or other features are refused in one line.

    Holds gensis's folder lock on ``out`` (``rundir.lock_folder``) while it writes: a second predict into the
    same folder is refused in one line (before loading anything when the folder exists, else when it comes to
    write); the lock is released when done, unless the caller held it already. A refused predict leaves no
    empty ``out`` behind (``rundir.removed_if_left_empty``)."""
    from gensis.rundir import held_locks, release_folder, removed_if_left_empty

    held = held_locks()
    try:
        with removed_if_left_empty(out):
            return _predict(run, feats, out, heatmaps, slides)
    finally:
        for folder in held_locks() - held:
            release_folder(folder)


def _predict(run: str | Path, feats: str | Path, out: str | Path, heatmaps: bool,
             slides: list[str] | None) -> list[dict]:
    from gensis.device import pick_device
    from gensis.mil.heatmap import HEATMAPS_NEED, heatmap_thumbnail, save_heatmap
    from gensis.mil.train import build_model, predict
    from gensis.plots import matplotlib_module
    from gensis.rundir import (RunDir, atomic_write_json, atomic_write_text, described_by, load_tensors, lock_folder,
                               read_json, remove_stale_temps)

    from gensis.folder_kind import require_kind, require_own_or_empty

    run = Path(run)
    if heatmaps:  # before any prediction is written
        matplotlib_module(HEATMAPS_NEED)
    require_kind(run, "mil")
    if not (run / "mil.json").is_file():
        raise UserError(f"{run} is not a MIL run (no mil.json): train one with `gensis mil train`")
    if Path(out).expanduser().resolve() == run.resolve():  # its predictions.csv holds the cross-validated ones
        raise UserError(f"--out {out} is the MIL run itself (whose predictions.csv holds its cross-validation "
                        f"predictions): use another --out")
    require_own_or_empty(out, "mil-predictions")  # never over a user's predictions.csv or heatmaps/
    if Path(out).is_dir():
        lock_folder(out)  # a second predict on this --out is refused now (a new folder: when it writes)
    meta = read_json(run / "mil.json", "MIL run description")
    with described_by(run / "mil.json", "MIL run description"):
        splits, in_dim, classes = [str(x) for x in meta["splits"]], int(meta["in_dim"]), [str(c) for c in meta["classes"]]
    source = {"run": str(run.resolve()), "run_inputs": meta.get("inputs"), "feats": str(Path(feats).resolve())}
    _check_same_source(Path(out), source)
    cfg = RunDir(run).config()
    device = pick_device(cfg["run"]["device"])
    models = []
    for name in splits:
        w = run / name / "model.safetensors"
        if w.is_file():
            m = build_model(cfg, in_dim, len(classes))
            m.load_state_dict(load_tensors(w))
            models.append(m.to(device).eval())
    if not models:
        raise UserError(f"{run} has no trained model yet")
    bags = list_bags(feats)
    names = list(bags)
    if slides:  # ids or file names (A.svs, slides/A.svs), as the labels CSV of `mil train` takes them
        from gensis.wsi.dataset import known_slide_id

        ids = [known_slide_id(s, bags) for s in slides]
        unknown = [s for s, i in zip(slides, ids) if i is None]
        if unknown:
            raise UserError(f"no bag for slide {unknown[0]} in {feats} (bags are named by slide id, the file name "
                            f"without extension, e.g. {names[0]})")
        names = list(dict.fromkeys(i for i in ids if i is not None))
    out = Path(out)
    lock_folder(out)  # made only once there is something to write; one process per folder
    require_own_or_empty(out, "mil-predictions")  # again under the lock: another process may have written it
    _check_same_source(out, source)
    for folder in (out, out / "heatmaps"):
        remove_stale_temps(folder)  # left by a killed predict
    rows = []
    maps = []  # (slide, bag attributes, coords, attention) of each heatmap to draw
    for s in names:
        bag = read_bag(bags[s])
        if bag.features.shape[1] != in_dim:
            raise UserError(f"slide {s}: embeddings of size {bag.features.shape[1]}, the MIL run expects "
                            f"{in_dim} (embed with the same encoder)")
        if len(bag.features) == 0:
            raise UserError(f"slide {s} has an empty bag")
        trained_on, ident = meta.get("encoder_identity"), bag.attrs.get("encoder_identity")
        if trained_on and ident and ident != trained_on:  # same size, other encoder: predictions would be noise
            raise UserError(f"slide {s} was embedded with {bag.attrs.get('encoder')}, not with the encoder whose "
                            f"bags {run} was trained on ({meta.get('feats')}): embed these slides with that "
                            f"encoder")
        outs = [predict(m, [bag.features], device) for m in models]
        probs = np.mean([p[0] for p, _ in outs], axis=0)
        attn = np.mean([a[0] for _, a in outs], axis=0)
        rows.append({"slide": s, "predicted": classes[int(probs.argmax())],
                     **{f"p_{c}": float(v) for c, v in zip(classes, probs)}})
        if heatmaps:
            heatmap_thumbnail(bag.attrs, s)  # before anything is written: a bag without one is one line
            maps.append((s, bag.attrs, bag.coords, attn))
    from gensis.textfile import csv_text

    keys = list(rows[0])
    kept = _earlier_rows(out, source, keys, {r["slide"] for r in rows})
    if kept:
        print(f"gensis: note: {out / 'predictions.csv'} keeps its rows of {len(kept)} slide(s) not predicted now "
              f"(same run and features)", file=sys.stderr)
    # first: predictions.csv marks the folder as this command's (folder_kind), so a predict killed (or stopped by
    # an error) while drawing heatmaps is rerun into it; heatmaps first left a folder its rerun refused
    atomic_write_text(out / "predictions.csv", csv_text([keys, *[[r[k] for k in keys] for r in [*kept, *rows]]]))
    atomic_write_json(out / SOURCE, source)
    for s, attrs, coords, attn in maps:
        save_heatmap(out / "heatmaps" / f"{s}.png", attrs, coords, attn)
    return rows


def _check_same_source(out: Path, source: dict) -> None:
    """One ``UserError`` line when ``out`` holds predictions of another run or other features: a rerun into it
    replaced predictions.csv with the new rows only, while the heatmaps of the slides it did not predict stayed,
    from the other run (a folder mixing two predictions; the earlier rows lost). A folder from before this file
    (no predict.json) is taken as before."""
    try:
        prev = json.loads((out / SOURCE).read_text())
    except (OSError, ValueError):
        return
    if isinstance(prev, dict) and prev != source:
        raise UserError(f"--out {out} holds predictions of run {prev.get('run')} on {prev.get('feats')}; a rerun into "
                        f"it takes the same --run and --feats (it adds or redoes slides): use another --out")


def _earlier_rows(out: Path, source: dict, keys: list[str], now: set[str]) -> list[dict]:
    """The rows of ``out/predictions.csv`` for slides not predicted now, when it comes from the same ``source``
    (so a rerun with ``--slides`` adds to the table instead of dropping the rows, and heatmaps, of the others)."""
    from gensis.textfile import read_csv

    try:
        if json.loads((out / SOURCE).read_text()) != source:
            return []
        header, rows = read_csv(out / "predictions.csv")
    except (OSError, ValueError, UserError):
        return []
    if header != keys:
        return []
    return [r for _, r in rows if r.get("slide") not in now]
