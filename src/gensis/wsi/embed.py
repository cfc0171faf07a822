"""``gensis wsi embed``: one bag of tile embeddings (+ coordinates) per slide, from a frozen encoder.

Tiles stream from the slides through one DataLoader (workers read them lazily, in slide order); each slide's
bag is written (``gensis.mil.bags``) as soon as its last tile is embedded. A slide whose bag exists with the
same encoder and tiles is skipped, so a killed run resumes at the slide it was on. An ``--out`` holding bags of
another encoder is refused before anything is written (each encoder's bags in a folder of their own).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from gensis.data.workers import WorkerLoader
from gensis.errors import UserError
from gensis.mil.bags import FORMAT as BAG_FORMAT, read_bag_attrs, write_bag

if TYPE_CHECKING:
    from gensis.models.encoder import Encoder


class _Tiles(Dataset):
    def __init__(self, ds, indices: np.ndarray):
        self.ds, self.indices = ds, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, int]:
        i = int(self.indices[j])
        return torch.from_numpy(self.ds.get(i)).permute(2, 0, 1).contiguous(), i  # (3, P, P) uint8


def embed_tiles(encoder_spec: str, tiles: str | Path, out: str | Path, batch_size: int = 256, num_workers: int = 2,
                device: str = "auto", quiet: bool = False, like: str | Path | None = None) -> dict[str, str]:
    """Embed every tiled slide of ``tiles`` with ``encoder_spec`` (any spec of ``load_encoder``, as ``gensis eval``:
    a pretraining run, ``pixels``, ``random``, ``timm:NAME=WEIGHTS``) into ``out/<slide>.h5``.
    ``like`` (with ``encoder_spec='random'``): a pretraining run whose architecture and ``train.seed`` the random
    encoder takes, i.e. the initialisation that run started from (the random-init baseline of the slide demo).
    Returns {slide id: done | skipped}.

    Holds gensis's folder lock on ``out`` (``rundir.lock_folder``): a second embed into the same folder is
    refused in one line (before the encoder is loaded when the folder exists); released when done, unless the
    caller held it already. A refused run (e.g. a slide moved since it was tiled) leaves no empty ``out`` behind
    (``rundir.removed_if_left_empty``)."""
    from gensis.rundir import held_locks, release_folder, removed_if_left_empty

    held = held_locks()
    try:
        with removed_if_left_empty(out):
            return _embed(encoder_spec, tiles, out, batch_size, num_workers, device, quiet, like)
    finally:
        for folder in held_locks() - held:
            release_folder(folder)


def _embed(encoder_spec: str, tiles: str | Path, out: str | Path, batch_size: int, num_workers: int,
           device: str, quiet: bool, like: str | Path | None) -> dict[str, str]:
    from gensis.device import pick_device
    from gensis.progress import progress
    from gensis.wsi.dataset import TileImageSet

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UserError(f"--batch-size must be an integer >= 1, got {batch_size}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise UserError(f"--workers must be an integer >= 0 (0: read tiles in this process), got {num_workers}")
    ds = TileImageSet(tiles)
    from gensis.rundir import lock_folder, remove_stale_temps

    out = Path(out)
    from gensis.folder_kind import refuse_other_kind, require_own_or_empty

    refuse_other_kind(out, "features")  # a run, a bank, tiles ...: the bags were written into it
    # a folder of the user's (documents, images): the bags were added beside their files (mil predict and eldm
    # sample refuse such an --out too); one that holds bags already takes more (another tiling, more slides)
    if out.is_dir():
        require_own_or_empty(out, "features", again="to add slides to it")
    if out.is_dir():
        lock_folder(out)  # a second embed on this --out is refused now, before the encoder is loaded
    enc = _encoder(encoder_spec, like)
    _refuse_other_encoders(out, enc.identity, encoder_spec)
    dev = pick_device(device)
    enc.to(dev)
    lock_folder(out)  # makes the folder; one process per folder (its bags and temporary files)
    remove_stale_temps(out)  # a killed run's temporary bag files (marked, their pid gone)
    status: dict[str, str] = {}
    todo = []
    for s, st in enumerate(ds.slides):
        path = out / f"{st.slide_id}.h5"
        a = read_bag_attrs(path)
        if os.path.lexists(path) and (a is None or a.get("format") != BAG_FORMAT):  # e.g. --out TILES/.../patches
            what = f"format {a.get('format')!r}" if a is not None else "not a readable HDF5 file"
            raise UserError(f"--out {out} holds {path.name}, which is not a bag of tile embeddings ({what}); "
                            f"`wsi embed` would replace it: use another --out (nothing was written)")
        if a and a.get("encoder_identity") == enc.identity and a.get("tiles_key") == st.attrs.get("settings_key") \
                and a.get("slide_bytes") == st.attrs.get("slide_bytes") and _same_coords(path, st.coords):
            status[st.slide_id] = "skipped"  # (a slide retiled since, e.g. replaced under its name: embedded again)
        else:
            _refuse_other_tiling(path, a, ds.folder)
            todo.append(s)
    if not todo:
        return status
    idx = np.concatenate([ds.slide_indices(s) for s in todo])
    loader = WorkerLoader(_Tiles(ds, idx), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=dev.type == "cuda")
    remaining = {s: len(ds.slide_indices(s)) for s in todo}
    feats: dict[int, list[np.ndarray]] = {s: [] for s in todo}
    rows: dict[int, list[np.ndarray]] = {s: [] for s in todo}
    bar = progress(total=len(idx), desc="embed", unit="tile", disable=quiet)
    from gensis.device import autocast, use_bf16

    bf16 = use_bf16(dev) and dev.type == "cuda"  # bf16 on GPUs; CPUs keep fp32 features
    for images, ii in loader:
        with autocast(dev, bf16):
            f = enc(images.to(dev, non_blocking=True)).float().cpu().numpy()   # (B, D)
        ii = ii.numpy()
        slides = ds.groups[ii]
        for s in np.unique(slides):
            m = slides == s
            feats[s].append(f[m])
            rows[s].append(ii[m])
            remaining[s] -= int(m.sum())
            if remaining[s] == 0:
                _write(ds, int(s), np.concatenate(feats.pop(s)), np.concatenate(rows.pop(s)), out, enc, encoder_spec)
                status[ds.slides[s].slide_id] = "done"
                bar.set_postfix(slides=f"{len(status)}/{len(ds.slides)}", refresh=False)
        bar.update(len(ii))
    bar.close()
    return status


def _refuse_other_encoders(out: Path, identity: str, encoder_spec: str) -> None:
    """One ``UserError`` line, before anything is written, when ``out`` holds bags of another encoder: they were
    replaced one by one without a word (the other encoder's features lost; interrupted, a folder of two encoders
    that ``mil train`` refuses). Each encoder's bags go into a folder of their own, as ``mil train`` asks."""
    if not out.is_dir():
        return
    others: dict[str, list[str]] = {}  # the other encoder's name -> its bags
    for f in sorted(out.glob("*.h5")):
        a = read_bag_attrs(f)
        if a is not None and a.get("format") == BAG_FORMAT and a.get("encoder_identity") not in (None, "", identity):
            others.setdefault(str(a.get("encoder", "?")), []).append(f.name)
    if others:
        name, files = next(iter(others.items()))
        same_name = " (other weights: retrained since?)" if name == str(encoder_spec) else ""
        raise UserError(f"--out {out} holds {len(files)} bag(s) embedded with another encoder, {name}{same_name} "
                        f"(e.g. {files[0]}); `wsi embed --encoder {encoder_spec}` would replace them: embed each "
                        f"encoder into a folder of its own (another --out), or remove those bags first")


def _refuse_other_tiling(bag: Path, attrs: dict | None, folder: Path) -> None:
    """One ``UserError`` line when ``bag`` (to be replaced) was embedded from the tiles of another tiling folder
    that still holds this slide (``--tiles T/10x_...`` then ``--tiles T/20x_...`` into one ``--out``): the first
    tiling's bags were replaced one by one without a word. A slide retiled in the same folder, or a tiles folder
    moved since (its old tile file gone), is embedded again as before."""
    old = Path(str((attrs or {}).get("tiles_file", "")))
    if not old.name or not old.is_file() or old.parent.parent.resolve() == folder.resolve():
        return
    raise UserError(f"--out {bag.parent} holds {bag.name} embedded from other tiles ({old.parent.parent}); "
                    f"embedding {folder} would replace it: embed each tiling into a folder of its own (another --out)")


def _same_coords(bag: Path, coords: np.ndarray) -> bool:
    import h5py

    try:
        with h5py.File(bag, "r") as f:
            return np.array_equal(f["coords"][:], coords)
    except (OSError, KeyError):
        return False


def _write(ds, s: int, features: np.ndarray, rows: np.ndarray, out: Path, enc, encoder_spec: str) -> None:
    st = ds.slides[s]
    order = np.argsort(rows, kind="stable")
    coords = np.stack([ds._x[rows], ds._y[rows]], 1)[order]
    a = st.attrs
    tiles_file = ds.folder / "patches" / f"{st.slide_id}.h5"
    write_bag(out / f"{st.slide_id}.h5", features[order], coords,
              {"slide_id": st.slide_id, "slide_path": str(st.slide_path), "tiles_file": str(tiles_file.resolve()),
               "encoder": str(encoder_spec), "encoder_identity": enc.identity,
               "tiles_key": a.get("settings_key", ""), "patch_size_level0": int(a["patch_size_level0"]),
               **({"slide_bytes": int(a["slide_bytes"])} if a.get("slide_bytes") is not None else {}),
               "thumb_scale_x": float(a["thumb_scale_x"]), "thumb_scale_y": float(a["thumb_scale_y"]),
               "thumbnail": str((ds.folder / "thumbnails" / f"{st.slide_id}.png").resolve())})


def _encoder(spec: str, like: str | Path | None) -> "Encoder":
    from gensis.models.encoder import check_encoder_run, load_encoder
    from gensis.rundir import RunDir

    if like is None:
        return load_encoder(spec)
    if spec != "random":
        raise UserError(f"--like goes with --encoder random, not '{spec}'")
    check_encoder_run(str(like))
    return load_encoder("random", like=str(like), seed=int(RunDir(like).config()["train"]["seed"]))

