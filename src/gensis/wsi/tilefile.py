"""The on-disk format of tiled slides (Trident-like folders, one HDF5 file of coordinates per slide).

Layout of ``gensis wsi tile SLIDES --out TILES``::

    TILES/<res>_<P>px_<O>px_overlap/      e.g. 20x_256px_0px_overlap (0.7mpp_256px_... for odd resolutions)
        patches/<slide>.h5                coordinates (the tiles themselves are never written)
        thumbnails/<slide>.png            the slide's thumbnail (also the background of attention heatmaps)
        visualization/<slide>.png         the thumbnail with every kept tile outlined
        tiling.json                       settings + per-slide status (done / failed, tile count, error)

``patches/<slide>.h5`` holds

    coords   int64 (N, 2)   level-0 (x, y) of each tile's top-left corner, row-major over the grid
    tissue   float32 (N,)   tissue fraction of each tile (from the thumbnail mask)

and, as attributes of the root *and* of ``coords`` (Trident reads them from ``coords``):
``TileGeometry`` (slide_mpp, target_mpp, patch_size, overlap, level, level_downsample, read_size,
patch_size_level0, step_level0, level0_width, level0_height, resampled), plus slide_path (absolute),
slide_bytes (the slide file's size: with level0_width/height, the check that the slide is still the one tiled),
slide_id, backend, mpp_source (metadata / csv / --slide-mpp), target_magnification, thumb_scale_x/y
(level-0 pixels per thumbnail pixel), min_tissue, fill_holes, tissue_method (otsu / none), settings_key (resume
check) and format
(``gensis-tiles/1``). Reading a tile back: ``read_tile(open_slide(slide_path), geometry, x, y)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gensis.errors import UserError
from gensis.h5attrs import attr_value, read_attrs, read_file_attrs, write_attrs
from gensis.rundir import atomic_path, make_folder
from gensis.wsi.geometry import TileGeometry

FORMAT = "gensis-tiles/1"


@dataclass
class SlideTiles:
    """One slide's tiles: coordinates, geometry and attributes (small: 16 bytes a tile)."""

    slide_id: str
    slide_path: Path
    coords: np.ndarray    # (N, 2) int64 level-0 (x, y)
    tissue: np.ndarray    # (N,) float32
    geometry: TileGeometry
    attrs: dict

    def __len__(self) -> int:
        return len(self.coords)


def write_slide_tiles(path: Path, coords: np.ndarray, tissue: np.ndarray, attrs: dict) -> None:
    """Write atomically (temporary file, then rename): a file that exists is complete."""
    import h5py

    make_folder(path.parent)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        d = f.create_dataset("coords", data=np.asarray(coords, np.int64).reshape(-1, 2))
        f.create_dataset("tissue", data=np.asarray(tissue, np.float32))
        write_attrs({**attrs, "format": FORMAT}, f, d)


def read_slide_tiles(path: Path) -> SlideTiles:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs = read_attrs(f)
            coords = f["coords"][:]
            tissue = f["tissue"][:] if "tissue" in f else np.ones(len(coords), np.float32)
    except (OSError, KeyError) as e:
        raise UserError(f"cannot read tile coordinates {path}: {e}") from None
    if attrs.get("format") != FORMAT:
        raise UserError(f"{path} is not a gensis tile file (format {attrs.get('format')!r}, expected {FORMAT})")
    return SlideTiles(str(attrs["slide_id"]), Path(attrs["slide_path"]), coords, tissue,
                      TileGeometry.from_attrs(attrs), attrs)


def changed_since_tiling(attrs: dict, dimensions: tuple[int, int], nbytes: int | None) -> str | None:
    """Why the slide now at a tile file's ``slide_path`` is not the one it was tiled from (level-0 size, file size
    in bytes when the tile file recorded it), or None. Another scan or slide saved under the same name kept the
    old coordinates: tiles were read from wherever they now fall (background, another tissue), silently."""
    was = (int(attrs.get("level0_width", -1)), int(attrs.get("level0_height", -1)))
    if tuple(int(v) for v in dimensions) != was:
        return f"level 0 is {dimensions[0]}x{dimensions[1]} pixels, it was {was[0]}x{was[1]} when tiled"
    if nbytes is not None and attrs.get("slide_bytes") is not None and int(attrs["slide_bytes"]) != int(nbytes):
        return f"the file is {nbytes} bytes, it was {int(attrs['slide_bytes'])} when tiled"
    return None


read_tile_attrs = read_file_attrs  # the file's attributes, or None when it is absent or unreadable


def settings_key(path: Path) -> str | None:
    """The settings key of an existing tile file (None if absent or unreadable): the resume check."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return attr_value(f.attrs.get("settings_key"))
    except OSError:
        return None


def tiles_dir(root: str | Path) -> Path:
    """The folder holding ``patches/``: ``root`` itself, its single ``*_overlap`` sub-folder, or (``root`` being
    that ``patches/`` folder, as a file browser shows the ``.h5`` files) its parent."""
    root = Path(root).expanduser()
    if (root / "patches").is_dir():
        return root
    if root.name == "patches" and (root.parent / "tiling.json").is_file():  # was "run gensis wsi tile --out .../patches"
        return root.parent
    from gensis.inputs import input_folder

    input_folder(root, "tiles folder")
    subs = sorted(p for p in root.iterdir() if (p / "patches").is_dir())
    if len(subs) == 1:
        return subs[0]
    if not subs:
        from gensis.folder_kind import require_kind
        from gensis.wsi.slide import SLIDE_EXTS

        require_kind(root, "tiles")  # bags of `wsi embed`, a run ...: named as such (not "run wsi tile --out" there)

        if any(p.suffix.lower() in SLIDE_EXTS for p in root.iterdir()):  # was: "run gensis wsi tile SLIDES --out slides/"
            raise UserError(f"{root} holds slides, not tiles: tile them first (`gensis wsi tile {root} --out TILES`), "
                            f"then pass TILES")
        raise UserError(f"{root} holds no tiles (no patches/ folder): run `gensis wsi tile SLIDES --out {root}`")
    raise UserError(f"{root} holds tiles at several settings ({', '.join(p.name for p in subs)}): "
                    f"name one, e.g. {subs[0]}")


def list_slides(root: str | Path) -> list[Path]:
    """Tile files of a tiles folder, sorted by slide id."""
    d = tiles_dir(root) / "patches"
    files = sorted(d.glob("*.h5"))
    if not files:
        raise UserError(f"no tiled slides in {d}")
    return files


def read_manifest(folder: Path) -> dict:
    p = folder / "tiling.json"
    return json.loads(p.read_text()) if p.is_file() else {}
