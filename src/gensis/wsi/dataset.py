"""Tiles of slides as an ``ImageSet``: ``--data tiles:TILES`` (or the tiles folder itself).

Only coordinates are held: three int arrays (slide, x, y) of the kept tiles, 20 bytes a tile. Pixels are read
from the slide on ``get(i)``, in whichever process asks: DataLoader workers open their own slide handles
(handles are dropped when the set is pickled), so nothing is extracted to disk. ``groups`` is the slide index
of each tile, so the bank's interpolation partner (``gen.secondary=group``) comes from another slide.

Slide labels come from a CSV (columns ``slide,label``; label names or integers) given as
``tiles:TILES?labels=slides.csv``; each tile carries its slide's label. Tiles of slides missing from the CSV
are dropped (and counted in a warning).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np

from gensis.data.sources import ImageSet
from gensis.errors import UserError
from gensis.wsi.geometry import TileGeometry, read_tile
from gensis.wsi.slide import SlideError
from gensis.wsi.tilefile import SlideTiles, changed_since_tiling, list_slides, read_slide_tiles, tiles_dir

PREFIX = "tiles:"


def read_label_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a slide labels CSV (columns ``slide,label``, optional ``patient``, ``split``), values stripped,
    missing cells as ``""``; rows without a slide name are skipped. One ``UserError`` line, naming the file and
    line, for: no such file, not UTF-8 text, no ``slide``/``label`` header, a row without a label, a slide listed
    twice (it was counted twice, or silently took its last label). A UTF-8 BOM (Excel's "CSV UTF-8") is read;
    column names are case-insensitive, and CLAM's ``slide_id`` / ``case_id`` stand for ``slide`` / ``patient``."""
    from gensis.textfile import read_csv

    from gensis.inputs import input_file

    path = input_file(path, "labels CSV")
    header, raw = read_csv(path)
    names = {h.lower() for h in header}
    # CLAM's / Trident's dataset CSVs (case_id, slide_id, label) are read as they are
    alias = {a: b for a, b in (("slide_id", "slide"), ("case_id", "patient")) if a in names and b not in names}
    if not {"slide", "label"} <= names | set(alias.values()):
        raise UserError(f"{path}: needs columns 'slide' and 'label' (found: {', '.join(header) if header else 'nothing'})")
    rows: list[dict[str, str]] = []
    seen: dict[str, int] = {}
    for line, row in raw:
        row = {alias.get(k.lower(), k.lower()): v for k, v in row.items()}  # 'Slide,Label' as spreadsheets write them
        if not row["slide"]:
            continue
        if not row["label"]:
            raise UserError(f"{path}, line {line}: slide {row['slide']} has no label")
        if row["slide"] in seen:
            raise UserError(f"{path}, line {line}: slide {row['slide']} is listed again (first on line "
                            f"{seen[row['slide']]}); give each slide one row")
        seen[row["slide"]] = line
        rows.append(row)
    if not rows:  # was "needs columns 'slide' and 'label' (found: slide, label)": the very columns it asked for
        raise UserError(f"{path}: has the columns but no rows: give one row per slide (slide,label)")
    return rows


def read_labels_csv(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """({slide: label}, {slide: patient}) from a CSV with columns ``slide,label`` (+ optional ``patient``)."""
    rows = read_label_rows(path)
    labels = {r["slide"]: r["label"] for r in rows}
    patients = {r["slide"]: r.get("patient", "") for r in rows}
    return labels, {k: v for k, v in patients.items() if v}


def known_slide_id(cell: str, known) -> str | None:
    """The id among ``known`` (tiled slides, bags) that ``cell`` names: the id itself (``A``) or the slide's file
    name or path (``A.svs``, ``slides/A.svs``, ``C:\\scans\\A.svs``); None when it names none."""
    from gensis.wsi.slide import SLIDE_EXTS, slide_id

    if cell in known:
        return cell
    name = cell.replace("\\", "/").rsplit("/", 1)[-1]
    sid = slide_id(name) if Path(name).suffix.lower() in SLIDE_EXTS else name
    return sid if sid in known else None


def match_label_rows(rows: list[dict[str, str]], known,
                     path: str | Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    """({slide id: row}, [slide cells matching no known id]) for the rows of a labels CSV against the slide ids
    ``known`` (tiled slides, bags). A cell is a slide id (``A``) or, as many cohort tables have it, the slide's
    file name or path (``A.svs``, ``slides/A.svs``), which was "no bag / left out" for every row. Two rows naming
    one slide (``A`` and ``A.svs``) are one ``UserError`` line."""
    known = set(known)
    matched: dict[str, dict[str, str]] = {}
    cells: dict[str, str] = {}
    missing = []
    for r in rows:
        cell = r["slide"]
        sid = known_slide_id(cell, known)
        if sid is None:
            missing.append(cell)
            continue
        if sid in matched:
            raise UserError(f"{path}: rows '{cells[sid]}' and '{cell}' name the same slide {sid}; give each slide "
                            f"one row")
        matched[sid], cells[sid] = r, cell
    return matched, missing


def class_names(values) -> list[str]:
    """Sorted label names; integers sort numerically (so ISUP grades 0..5 keep their order)."""
    vals = sorted(set(values))
    try:
        return [str(v) for v in sorted(vals, key=lambda v: int(v))]
    except ValueError:
        return [str(v) for v in vals]


def warn_alike_labels(classes: list[str], path: str | Path) -> None:
    """A warning line when two class names of the labels CSV ``path`` differ only in case or spacing ('Benign' and
    'benign' were two classes without a word: another class in every metric, its slides split off)."""
    folded: dict[str, list[str]] = {}
    for c in classes:
        folded.setdefault(" ".join(c.casefold().split()), []).append(c)
    alike = [v for v in folded.values() if len(v) > 1]
    if alike:
        print(f"gensis: warning: labels {' and '.join(repr(c) for c in alike[0])} of {path} differ only in case or "
              f"spacing and are {len(classes)} separate classes here ({', '.join(classes)}); write each class one way "
              f"if they are one", file=sys.stderr)


class TileImageSet(ImageSet):
    """Tiles read lazily from their slides (H×W×3 uint8 of the tiling's patch size)."""

    tiles = True

    def __init__(self, root: str | Path, labels_csv: str | Path | None = None, backend: str = "auto"):
        self.folder = tiles_dir(root)
        self.name = self.folder.parent.name or "tiles"
        self.backend = backend
        self.slides: list[SlideTiles] = []
        for f in list_slides(self.folder):
            st = read_slide_tiles(f)
            if len(st):
                self.slides.append(st)
        if not self.slides:
            raise UserError(f"{self.folder}: no slide has any tile")
        _refuse_stale_tile_files(self.folder, self.slides)
        self.classes = None
        self.labels = None
        keep = list(range(len(self.slides)))
        slide_label = None
        if labels_csv is not None:
            matched, untiled = match_label_rows(read_label_rows(labels_csv), (s.slide_id for s in self.slides),
                                                labels_csv)
            table = {sid: r["label"] for sid, r in matched.items()}
            missing = [s.slide_id for s in self.slides if s.slide_id not in table]
            keep = [i for i, s in enumerate(self.slides) if s.slide_id in table]
            if not keep:
                raise UserError(f"{labels_csv}: none of the {len(self.slides)} tiled slides has a label (slide "
                                f"ids are file names without extension, e.g. {self.slides[0].slide_id})")
            if missing:
                print(f"gensis: warning: {len(missing)} tiled slides have no label in {labels_csv} and are left out "
                      f"(e.g. {missing[0]})", file=sys.stderr)
            if untiled:
                print(f"gensis: warning: {len(untiled)} labelled slides of {labels_csv} have no tiles in "
                      f"{self.folder} (e.g. {untiled[0]})", file=sys.stderr)
            self.classes = class_names(table[self.slides[i].slide_id] for i in keep)
            warn_alike_labels(self.classes, labels_csv)
            slide_label = {self.slides[i].slide_id: self.classes.index(table[self.slides[i].slide_id]) for i in keep}
        self.slides = [self.slides[i] for i in keep]
        counts = np.array([len(s) for s in self.slides])
        self.groups = np.repeat(np.arange(len(self.slides), dtype=np.int64), counts)   # (N,) slide index
        xy = np.concatenate([s.coords for s in self.slides])                            # (N, 2)
        self._x, self._y = xy[:, 0].astype(np.int64), xy[:, 1].astype(np.int64)
        if slide_label is not None:
            self.labels = np.repeat(np.array([slide_label[s.slide_id] for s in self.slides], np.int64), counts)
        self._geoms: list[TileGeometry] = [s.geometry for s in self.slides]
        self._paths = [s.slide_path for s in self.slides]
        self._open: dict[int, object] = {}
        self._identity: str | None = None

    @property
    def slide_ids(self) -> list[str]:
        return [s.slide_id for s in self.slides]

    def __len__(self) -> int:
        return len(self._x)

    def __getstate__(self) -> dict:  # slide handles stay in the process that opened them
        d = self.__dict__.copy()
        d["_open"] = {}
        return d

    def _slide(self, s: int):
        h = self._open.get(s)
        if h is None:
            from gensis.wsi.slide import open_slide

            h = open_slide(self._paths[s], self.backend)
            try:
                nbytes: int | None = Path(self._paths[s]).stat().st_size
            except OSError:
                nbytes = None
            why = changed_since_tiling(self.slides[s].attrs, h.dimensions, nbytes)
            if why is not None:
                h.close()
                raise SlideError(f"slide {self._paths[s]} is not the slide that was tiled ({why}): another file "
                                 f"under its name? restore it, or tile it again (`gensis wsi tile`)")
            self._open[s] = h
        return h

    def location(self, i: int) -> tuple[int, int, int]:
        """(slide index, x, y) of tile ``i``."""
        return int(self.groups[i]), int(self._x[i]), int(self._y[i])

    def get(self, i: int) -> np.ndarray:
        """Tile ``i`` (P×P×3 uint8). ``SlideError`` naming the slide when it is gone, or when the tile cannot be
        decoded (opening only checks one pixel of the first and last level: a slide damaged, or replaced by
        another file, after tiling fails here)."""
        s, x, y = self.location(i)
        slide = self._slide(s)
        try:
            return read_tile(slide, self._geoms[s], x, y)
        except UserError:
            raise
        except Exception as e:  # each slide library has its own error types
            why = str(e).splitlines()[0] if str(e) else "unreadable"
            raise SlideError(f"cannot read the tile at level-0 ({x}, {y}) of slide {self._paths[s]}: "
                             f"{type(e).__name__}: {why} (the file is damaged or changed since it was tiled; "
                             f"restore it, or tile it again)") from e

    def slide_indices(self, s: int) -> np.ndarray:
        return np.flatnonzero(self.groups == s)

    @property
    def identity(self) -> str:
        if self._identity is None:
            h = hashlib.sha256()
            for st in self.slides:
                h.update(f"{st.slide_id}|{st.attrs.get('settings_key')}|{len(st)}\n".encode("utf-8", "surrogateescape"))
                h.update(np.ascontiguousarray(st.coords).data)
            if self.labels is not None:
                h.update(np.ascontiguousarray(self.labels).data)
            self._identity = h.hexdigest()[:16]
        return self._identity


def _refuse_stale_tile_files(folder: Path, slides: list[SlideTiles]) -> None:
    """A ``UserError`` for a slide whose last ``wsi tile`` failed (``tiling.json``) while its tile file is from an
    earlier tiling with other settings (e.g. ``--min-tissue``): its old tiles were used beside the others' new
    ones, silently."""
    from gensis.wsi.tilefile import read_manifest
    from gensis.wsi.tiler import TileSettings

    manifest = read_manifest(folder)
    entries = manifest.get("slides") or {}
    try:
        now = TileSettings(**manifest["settings"])
    except (KeyError, TypeError):
        return
    for st in slides:
        entry = entries.get(st.slide_id) or {}
        if entry.get("status") != "failed" or st.attrs.get("slide_mpp") is None:
            continue
        if st.attrs.get("settings_key") != now.key(float(st.attrs["slide_mpp"])):
            raise UserError(f"slide {st.slide_id}: its last `gensis wsi tile` failed ({entry.get('error', '')}), and "
                            f"{folder / 'patches' / (st.slide_id + '.h5')} is from an earlier tiling with other "
                            f"settings: fix the slide and run `gensis wsi tile` again, or remove that file")


def parse_tiles_spec(src: str) -> tuple[str, str | None]:
    """``tiles:TILES`` or ``tiles:TILES?labels=CSV`` → (TILES, CSV or None)."""
    body = src[len(PREFIX):] if src.startswith(PREFIX) else src
    labels = None
    if "?" in body:
        body, query = body.split("?", 1)
        for part in query.split("&"):
            k, _, v = part.partition("=")
            if k != "labels" or not v:
                raise UserError(f"unknown option '{part}' in '{src}' (only ?labels=CSV)")
            labels = v
    return body, labels


def is_tiles_folder(path: Path) -> bool:
    """A folder made by ``gensis wsi tile``: it, its ``patches/`` folder, or a settings sub-folder holds
    ``patches/*.h5``. Several settings sub-folders count too, so that ``open_tiles`` names them (it was read as
    an image folder, whose error named the tiling's thumbnails)."""
    try:
        return any(tiles_dir(path).joinpath("patches").glob("*.h5"))
    except (UserError, OSError):  # OSError: a sub-folder that cannot be searched (an image folder's class folder,
        pass                      # named by the image folder's own read, not as its "<class>/patches")
    try:
        return any(any(p.joinpath("patches").glob("*.h5")) for p in Path(path).iterdir() if p.is_dir())
    except OSError:
        return False


def open_tiles(src: str) -> TileImageSet:
    root, labels = parse_tiles_spec(src)
    return TileImageSet(root, labels)


def export_tiles(ds: TileImageSet, out: str | Path, quiet: bool = False, fmt: str = "png") -> int:
    """Write every tile as an image file: ``out/<label>/<slide>_x_y.png`` (labelled) or ``out/<slide>_x_y.png``,
    and, first, ``out/tiles.csv`` (``file,slide``: each tile's slide, so that ``--data out`` is split by slide as
    ``tiles:`` is). An existing file is kept (resumable). An ``out`` holding images this export would not write
    (an export with other labels or tiles: every tile then sat under two labels) is refused in one line before
    anything is written. Returns the number of files written."""
    from PIL import Image

    from gensis.data.sources import TILE_SLIDES_CSV
    from gensis.progress import progress
    from gensis.rundir import atomic_save_image, atomic_write_text, remove_stale_temps
    from gensis.textfile import csv_text

    out = Path(out)
    for c in (ds.classes or []) if ds.labels is not None else []:
        if "/" in c or "\\" in c or c.startswith("."):  # 'ER+/PR-' made ER+/PR-/ (unreadable back), '..' wrote outside
            raise UserError(f"label '{c}' cannot be a folder name of {out} (a '/' or '\\' nests folders, a leading '.' "
                            f"hides it or leaves the folder): name that class otherwise in the labels CSV (nothing was "
                            f"written)")
    for folder in (out, *(out / c for c in (ds.classes or []) if ds.labels is not None)):
        remove_stale_temps(folder)  # a killed export's temporary files (marked, their pid gone)
    files = []
    for i in range(len(ds)):
        s, x, y = ds.location(i)
        name = f"{ds.slides[s].slide_id}_{x}_{y}.{fmt}"
        files.append((f"{ds.classes[ds.labels[i]]}/{name}" if ds.labels is not None else name, ds.slides[s].slide_id))
    from gensis.folder_kind import describe, folder_kind

    found = folder_kind(out) if out.is_dir() else None
    if found is not None:  # a pretraining run, a bank, a MIL run ...: the tiles were written into it
        raise UserError(f"--out {out} is {describe(found)}: `wsi export` would add every tile image to it: use another "
                        f"--out (nothing was written)")
    _refuse_other_images(out, {f for f, _ in files}, fmt)
    atomic_write_text(out / TILE_SLIDES_CSV, csv_text([["file", "slide"], *map(list, files)]))
    n = 0
    for i in progress(range(len(ds)), total=len(ds), desc="export", disable=quiet):
        path = out / files[i][0]
        if path.exists():
            continue
        atomic_save_image(Image.fromarray(ds.get(i)), path)  # tmp -> fsync -> rename -> fsync(dir)
        n += 1
    return n


def _refuse_other_images(out: Path, files: set[str], fmt: str) -> None:
    """One ``UserError`` line when ``out`` (or a sub-folder: a label's) holds ``.fmt`` images that are not among
    ``files``: the rerun of an export with other labels added every tile under its new label beside the old one
    (an ImageFolder with each tile in two classes: wrong k-NN and linear numbers), and tiles.csv named the new ones
    only; an export after retiling kept the dropped tiles. The rerun of the same export (resume) passes."""
    if not out.is_dir():
        return
    found = sorted(p.relative_to(out).as_posix() for pattern in (f"*.{fmt}", f"*/*.{fmt}") for p in out.glob(pattern))
    other = [f for f in found if f not in files]
    if other:
        raise UserError(f"--out {out} holds {len(other)} image(s) this export would not write (e.g. {other[0]}): an "
                        f"export with other labels or other tiles, or images of your own; exporting into it would mix "
                        f"them (a tile under two labels): use another --out (nothing was written)")
