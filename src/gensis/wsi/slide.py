"""Open a whole-slide image with OpenSlide, falling back to tiffslide: one small interface for both.

``open_slide(path)`` tries the backends in ``BACKENDS`` order (OpenSlide reads SVS, NDPI, MRXS, SCN, generic tiled
TIFF ...; tiffslide, pure Python on tifffile + imagecodecs, also reads plain TIFFs without tiles or pyramid
and JPEG 2000 tiles that OpenSlide refuses) and returns the first ``Slide`` that opens *and* decodes a pixel
at level 0 and at the last level. Coordinates are always level-0 pixels (x, y), as in both libraries.
Pixels come back as H×W×3 uint8; transparent areas (outside the scanned region) are white.

The slide's resolution (``mpp``: microns per level-0 pixel) comes from the backend's metadata
(``openslide.mpp-x`` / ``tiffslide.mpp-x``: Aperio ``MPP``, TIFF resolution tags in centimetres ...) and may be
missing: ``resolve_mpp`` then takes it from the user (``--slide-mpp``, or a CSV ``slide,mpp``) or refuses the
slide by name.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from gensis.errors import UserError

THUMB_DIRECT_FACTOR = 8   # the libraries' own thumbnail when the smallest level is at most 8× the thumbnail
STRIP_ROWS = 64           # thumbnail rows made per strip read (strip thumbnails of pyramid-less slides)
SLIDE_EXTS = {".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide", ".btf"}


SLIDE_ONLY_EXTS = SLIDE_EXTS - {".tif", ".tiff"}  # never a tile image (a .tif may be either)
SLIDE_TIFF_MIN_BYTES = 4 << 20  # TIFFs below this are not checked for being a slide (a 1024² RGB tile is 3 MiB)


def looks_like_slide(path: Path) -> bool:
    """Whether an image file is a whole-slide image: a slide-only extension (``.svs``, ``.ndpi`` ...), or a
    TIFF of at least ``SLIDE_TIFF_MIN_BYTES`` that is tiled with several resolution levels or wider than 8192
    px, or any TIFF wider than 16384 px (only the header is read)."""
    ext = path.suffix.lower()
    if ext in SLIDE_ONLY_EXTS:
        return True
    if ext not in (".tif", ".tiff"):
        return False
    try:
        if path.stat().st_size < SLIDE_TIFF_MIN_BYTES:
            return False
        import tifffile

        with tifffile.TiffFile(path) as t:
            page, levels = t.pages[0], len(t.series[0].levels) if t.series else 1
            side = max(int(page.imagewidth), int(page.imagelength))
            return side > 16384 or (bool(page.is_tiled) and (levels > 1 or side > 8192))
    except Exception:  # not a TIFF tifffile reads: the image reader says what is wrong with it
        return False


def refuse_slides_as_images(folder: Path, folders: list[Path], images: list[Path]) -> None:
    """A ``UserError`` when an image folder (``--data FOLDER``) holds whole-slide images: ``.svs``/``.ndpi`` ...
    files were left out without a word, and a slide saved as ``.tif`` was read whole as one training image (or
    refused as a "decompression bomb"). Slides are tiled first; their tiles are the images."""
    import os

    found = [p for p in images if p.suffix.lower() in (".tif", ".tiff") and looks_like_slide(p)]
    for d in folders:
        with os.scandir(d) as entries:
            found += [Path(e.path) for e in entries if not e.name.startswith(".") and
                      os.path.splitext(e.name)[1].lower() in SLIDE_ONLY_EXTS]
    if found:
        found.sort()
        raise UserError(f"{folder} holds whole-slide images ({found[0].name}{' ...' if len(found) > 1 else ''}; "
                        f"{len(found)} found), which are not read as images: tile them first (`gensis wsi tile "
                        f"{folder} --out TILES`), then use --data tiles:TILES")


class SlideError(UserError):
    """A slide that cannot be used (unreadable, no resolution ...); the message names it."""


def _rgb(arr: np.ndarray) -> np.ndarray:
    """RGBA / RGB / grey → H×W×3 uint8; transparent pixels become white (OpenSlide: outside the scan)."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] == 4:
        a = arr[:, :, 3:4].astype(np.uint16)
        rgb = arr[:, :, :3].astype(np.uint16)
        arr = ((rgb * a + 255 * (255 - a)) // 255).astype(np.uint8)
    elif arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = np.ascontiguousarray(arr[:, :, :3].astype(np.uint8, copy=False))
    return arr if arr.flags.writeable else arr.copy()  # PIL-backed arrays are read-only; torch wants writable


class Slide:
    """A whole-slide image opened by one backend. Level-0 coordinates everywhere."""

    def __init__(self, path: Path, backend: str, handle, mpp_key: str):
        self.path, self.backend, self._h = Path(path), backend, handle
        self.dimensions: tuple[int, int] = tuple(int(v) for v in handle.dimensions)  # (width, height) level 0
        self.level_count: int = int(handle.level_count)
        self.level_dimensions = [tuple(int(v) for v in d) for d in handle.level_dimensions]
        self.level_downsamples = [float(d) for d in handle.level_downsamples]
        self.properties = dict(handle.properties)
        self.metadata_mpp = _parse_mpp(self.properties.get(f"{mpp_key}.mpp-x"))

    @property
    def name(self) -> str:
        return slide_id(self.path)

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8 pixels of ``level`` whose top-left corner is level-0 pixel (x, y)."""
        img = self._h.read_region((int(x), int(y)), int(level), (int(width), int(height)))
        return _rgb(np.asarray(img))

    def thumbnail(self, max_size: int, bar: str | None = None) -> np.ndarray:
        """The whole slide, downsampled to fit ``max_size``×``max_size`` (aspect kept), H×W×3 uint8.

        When even the smallest level is much larger than the thumbnail (a plain TIFF without pyramid), the
        libraries would decode that whole level at once; it is then read in strips, each box-downsampled, with a
        progress bar named ``bar`` over the strips when ``bar`` is given (minutes on a large slide)."""
        lvl = self.level_count - 1
        w, h = self.level_dimensions[lvl]
        if max(w, h) <= THUMB_DIRECT_FACTOR * max_size:
            return _rgb(np.asarray(self._h.get_thumbnail((int(max_size), int(max_size)))))
        return self._strip_thumbnail(lvl, -(-max(w, h) // int(max_size)), bar)

    def _strip_thumbnail(self, level: int, f: int, bar: str | None = None) -> np.ndarray:
        """Level ``level`` box-downsampled by the integer factor ``f``, read ``STRIP_ROWS·f`` rows at a time."""
        from PIL import Image

        from gensis.progress import progress

        w, h = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        tw, th = max(1, w // f), max(1, h // f)
        out = np.empty((th, tw, 3), np.uint8)
        rows = STRIP_ROWS * f
        for r0 in progress(range(0, th * f, rows), desc=bar or "", unit="strip", disable=bar is None):
            n = min(rows, th * f - r0)                                     # level rows in this strip
            strip = self.read_region(0, int(round(r0 * ds)), level, tw * f, n)   # (n, tw·f, 3)
            out[r0 // f:(r0 + n) // f] = np.asarray(Image.fromarray(strip).reduce(f))
        return out

    def close(self) -> None:
        try:
            self._h.close()
        except Exception:
            pass

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _parse_mpp(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _open_openslide(path: Path) -> Slide:
    import openslide

    return Slide(path, "openslide", openslide.OpenSlide(str(path)), "openslide")


def _open_tiffslide(path: Path) -> Slide:
    import tiffslide

    return Slide(path, "tiffslide", tiffslide.TiffSlide(str(path)), "tiffslide")


BACKENDS: dict[str, Callable[[Path], Slide]] = {"openslide": _open_openslide, "tiffslide": _open_tiffslide}


def open_slide(path: str | Path, backend: str = "auto") -> Slide:
    """Open ``path`` with ``backend`` (``auto``: OpenSlide, then tiffslide). Raises SlideError naming the slide.
    What tifffile (under tiffslide) logs about a file it then fails on is part of that one line, not printed
    on its own ("<tifffile.TiffPages @8> invalid page offset ..." above the error); a slide that opens gets
    its log records as before."""
    path = Path(path)
    if not path.exists():
        raise SlideError(f"slide not found: {path}")
    if path.is_file() and path.stat().st_size == 0:  # was each library's "not a TIFF file: header=b''"
        raise SlideError(f"slide {path} is an empty file (0 bytes; an interrupted copy or download?)")
    names = list(BACKENDS) if backend == "auto" else [backend]
    errors = []
    for name in names:
        if name not in BACKENDS:
            raise UserError(f"unknown slide backend '{name}' (use auto, {', '.join(BACKENDS)})")
        with _held_log() as held:
            try:
                slide = BACKENDS[name](path)
                if slide.dimensions[0] <= 0 or slide.dimensions[1] <= 0:
                    raise ValueError(f"empty image {slide.dimensions}")
                try:  # a library may open a file whose tiles it cannot decode (e.g. OpenSlide on JPEG 2000 TIFF)
                    slide.read_region(0, 0, 0, 1, 1)
                    slide.read_region(0, 0, slide.level_count - 1, 1, 1)
                except Exception:
                    slide.close()
                    raise
            except ImportError as e:
                errors.append(f"{name} not installed ({e})")
                continue
            except Exception as e:  # each library has its own error types
                why = f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
                logged = [f"{r.name}: {r.getMessage().splitlines()[0]}" for r in held]
                errors.append(why + (f" ({'; '.join(logged[:2])})" if logged else ""))
                continue
        for r in held:  # opened: the library's records are handled as usual
            logging.getLogger(r.name).handle(r)
        return slide
    raise SlideError(f"cannot read slide {path}: {'; '.join(errors)}")


LIBRARY_LOGS = ("tifffile",)  # loggers of slide libraries whose records are held while a slide is opened
_held = threading.local()  # .records: this thread's held records while it opens a slide, else None


class _Hold(logging.Filter):
    """On a library's logger: a record made while this thread opens a slide is held, not handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        records = getattr(_held, "records", None)
        if records is None:
            return True
        records.append(record)
        return False


@contextmanager
def _held_log() -> Iterator[list[logging.LogRecord]]:
    """The records ``LIBRARY_LOGS`` make on this thread inside the block (other threads' pass as usual)."""
    for name in LIBRARY_LOGS:
        lg = logging.getLogger(name)
        if not any(isinstance(f, _Hold) for f in lg.filters):
            lg.addFilter(_Hold())
    records: list[logging.LogRecord] = []
    _held.records = records
    try:
        yield records
    finally:
        _held.records = None


def slide_id(path: str | Path) -> str:
    """The slide's id: its file name without extension (``A.svs`` → ``A``)."""
    p = Path(path)
    return p.name[: -len(p.suffix)] if p.suffix else p.name


def read_mpp_csv(path: str | Path) -> dict[str, float]:
    """A CSV with columns ``slide,mpp`` → {slide id or file name: mpp}."""
    from gensis.textfile import read_csv

    from gensis.inputs import input_file

    path = input_file(path, "mpp CSV")
    header, raw = read_csv(path)
    if not {"slide", "mpp"} <= {h.lower() for h in header}:  # 'Slide,MPP' as spreadsheets write them
        raise UserError(f"{path}: needs columns 'slide' and 'mpp' (found: {', '.join(header) if header else 'nothing'})")
    rows = [(i, {k.lower(): v for k, v in r.items()}) for i, r in raw]
    if not rows:  # was "needs columns 'slide' and 'mpp' (found: slide, mpp)": the very columns it asked for
        raise UserError(f"{path}: has the columns but no rows: give one row per slide (slide,mpp)")
    out: dict[str, float] = {}
    for i, r in rows:
        mpp = _parse_mpp(r["mpp"])
        if mpp is None:
            raise UserError(f"{path}:{i}: mpp '{r['mpp']}' is not a positive number")
        if r["slide"] in out and out[r["slide"]] != mpp:  # was: the last row won silently
            raise UserError(f"{path}:{i}: slide {r['slide']} is listed again with another mpp ({r['mpp']} after "
                            f"{out[r['slide']]:g})")
        out[r["slide"]] = mpp
    return out


@dataclass
class MppSource:
    """Where a slide's resolution may come from when its metadata has none."""

    default: float | None = None           # --slide-mpp: for every slide that lacks it
    table: dict[str, float] | None = None  # --mpp-csv: per slide

    def lookup(self, path: Path) -> float | None:
        if self.table:
            for key in (slide_id(path), path.name, str(path)):
                if key in self.table:
                    return self.table[key]
        return self.default

    def unmatched(self, slides: list[Path]) -> list[str]:
        """The ``--mpp-csv`` rows that name none of ``slides`` (a misspelt name left its slide at its metadata's
        resolution, or refused it for lacking one, without a word about the row)."""
        named = {k for p in slides for k in (slide_id(p), Path(p).name, str(p))}
        return [k for k in (self.table or {}) if k not in named]


def resolve_mpp(slide: Slide, source: MppSource | None = None) -> tuple[float, str]:
    """(mpp, where it came from). A CSV entry overrides the metadata; ``--slide-mpp`` only fills in a missing one."""
    source = source or MppSource()
    if source.table:
        for key in (slide_id(slide.path), slide.path.name, str(slide.path)):
            if key in source.table:
                return source.table[key], "csv"
    if slide.metadata_mpp is not None:
        return slide.metadata_mpp, "metadata"
    if source.default is not None:
        return source.default, "--slide-mpp"
    raise SlideError(f"slide {slide.path} has no resolution (mpp) in its metadata: give it with --slide-mpp MPP "
                     f"(e.g. 0.25 for 40x, 0.5 for 20x) or a CSV with columns slide,mpp (--mpp-csv)")


def find_slides(inputs: list[str]) -> list[Path]:
    """Slides from files, folders (every file with a slide extension) and list files (.txt: one path a line;
    .csv: a ``slide`` or ``path`` column). Relative paths in a list file are relative to the list file."""
    from gensis.textfile import read_csv, read_text

    out: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            def slides_in(d: Path) -> list[Path]:  # not hidden files: a Mac's ._slide.svs is no slide
                return [q for q in d.iterdir() if q.is_file() and not q.name.startswith(".")
                        and q.suffix.lower() in SLIDE_EXTS]

            found = sorted(slides_in(p))
            nested = sorted(q for sub in p.iterdir() if sub.is_dir() and not sub.name.startswith(".")
                            for q in slides_in(sub))
            hint = (f"; its sub-folders hold {len(nested)} (e.g. {nested[0]}): give them, e.g. `gensis wsi tile "
                    f"{p}/*/ ...`" if nested else "")
            if not found:
                raise UserError(f"no slides ({', '.join(sorted(SLIDE_EXTS))}) in folder {p}{hint}")
            if nested:  # a case-per-folder layout beside loose slides: those were left out without a word
                print(f"gensis: warning: {len(nested)} slides in sub-folders of {p} are not tiled (a folder's own "
                      f"slides only){hint}", file=sys.stderr)
            out += found
        elif p.suffix.lower() == ".txt" and p.is_file():
            out += [_rel(p, line.strip()) for line in read_text(p).splitlines()
                    if line.strip() and not line.startswith("#")]
        elif p.suffix.lower() == ".csv" and p.is_file():
            header, rows = read_csv(p)
            col = next((c for c in ("path", "slide") if rows and c in header), None)
            if col is None:
                raise UserError(f"{p}: a slide list CSV needs a 'path' or 'slide' column")
            out += [_rel(p, r[col]) for _, r in rows if r[col]]
        else:
            out.append(p)  # missing files are reported by name when tiled
    seen: dict[str, Path] = {}
    for p in out:
        sid = slide_id(p)
        if sid in seen and seen[sid].resolve() != p.resolve():
            raise UserError(f"two slides have the id '{sid}': {seen[sid]} and {p} (ids are file names without "
                            f"extension; rename one)")
        seen[sid] = p
    return list(seen.values())


def _rel(listfile: Path, entry: str) -> Path:
    q = Path(entry).expanduser()
    return q if q.is_absolute() else listfile.parent / q
