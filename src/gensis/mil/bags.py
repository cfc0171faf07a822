"""The on-disk format of slide bags (``gensis wsi embed`` writes them, ``gensis mil`` reads them).

``FEATS/<slide>.h5`` (one file per slide, as Trident's ``features_<encoder>/``):

    features  float32 (N, D)  one embedding per tile, in the order of the tile file
    coords    int64 (N, 2)    level-0 (x, y) of each tile

attributes: slide_id, slide_path, slide_bytes (the slide file's size when tiled), tiles_file (the
``patches/<slide>.h5`` it came from), encoder (the RUN directory or name), encoder_identity (hash of its weights), tiles_key (the tile file's settings key: resume
check), patch_size_level0, thumb_scale_x/y and thumbnail (path of the slide's thumbnail PNG, for heatmaps),
format (``gensis-bag/1``). Files are written atomically: one that exists is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gensis.errors import UserError
from gensis.h5attrs import read_attrs, read_file_attrs, write_attrs
from gensis.rundir import atomic_path, make_folder

FORMAT = "gensis-bag/1"


@dataclass
class Bag:
    slide_id: str
    features: np.ndarray   # (N, D) float32
    coords: np.ndarray     # (N, 2) int64
    attrs: dict


def write_bag(path: Path, features: np.ndarray, coords: np.ndarray, attrs: dict) -> None:
    import h5py

    make_folder(path.parent)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=np.asarray(features, np.float32))
        f.create_dataset("coords", data=np.asarray(coords, np.int64).reshape(-1, 2))
        write_attrs({**attrs, "format": FORMAT}, f)


read_bag_attrs = read_file_attrs  # the file's attributes, or None when it is absent or unreadable


def read_bag(path: Path) -> Bag:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = read_attrs(f)
            if attrs.get("format") == "gensis-tiles/1":  # --feats TILES/.../patches: was "object 'features' doesn't exist"
                raise UserError(f"{path} is a tile file of `gensis wsi tile` (coordinates), not a bag of embeddings: "
                                f"embed the tiles first (`gensis wsi embed --tiles TILES --out FEATS`), then pass "
                                f"--feats FEATS")
            if attrs.get("format") != FORMAT:
                raise UserError(f"{path} is not a gensis bag (format {attrs.get('format')!r}, expected {FORMAT})")
            feats, coords = f["features"][:], f["coords"][:]
    except (OSError, KeyError) as e:
        raise UserError(f"cannot read bag {path}: {e}") from None
    return Bag(str(attrs.get("slide_id", path.stem)), feats.astype(np.float32), coords, attrs)


def list_bags(folder: str | Path) -> dict[str, Path]:
    """{slide id: bag file} of a features folder."""
    from gensis.inputs import input_folder

    folder = input_folder(folder, "features folder")
    from gensis.folder_kind import require_kind

    require_kind(folder, "features")
    files = sorted(folder.glob("*.h5"))
    if not files:
        raise UserError(f"no bags (*.h5) in {folder}: run `gensis wsi embed --out {folder}` first")
    return {f.stem: f for f in files}
