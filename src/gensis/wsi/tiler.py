"""``gensis wsi tile``: tissue detection and tile coordinates for many slides, in parallel and resumable.

Each slide is one unit of work (a process of its own when ``workers > 1``): open → resolve mpp → choose the
level (``geometry``) → thumbnail → tissue mask (``tissue``) → grid → keep tiles whose tissue fraction is at
least ``min_tissue`` → write ``thumbnails/``, ``visualization/`` and finally ``patches/<slide>.h5`` (atomic:
its existence with the same settings key means the slide is done, so a rerun skips it). A slide that
cannot be read or lacks a resolution is reported by name and skipped; the others finish. The
"skipped" lines come in the order of the slide list, with any number of workers.

With ``workers > 1`` slides are tiled in spawned processes (OpenSlide handles and thread pools do not survive
``fork``): a script that calls ``tile_slides`` must do so under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gensis.errors import UserError
from gensis.owner import die_with_parent
from gensis.wsi.geometry import plan_geometry, resolution_name
from gensis.wsi.slide import MppSource, SlideError, open_slide, resolve_mpp, slide_id
from gensis.wsi.tilefile import changed_since_tiling, read_slide_tiles, read_tile_attrs, write_slide_tiles
from gensis.wsi.tissue import tile_fractions, tissue_mask


@dataclass(frozen=True)
class TileSettings:
    target_mpp: float = 0.5
    patch_size: int = 256
    overlap: int = 0
    min_tissue: float = 0.5      # keep a tile when at least this fraction of it is tissue (0: keep all)
    fill_holes: bool = False     # holes inside tissue count as tissue
    tissue: str = "otsu"         # otsu | none (every tile is tissue)
    thumb_size: int = 1024       # longest side of the thumbnail the mask is computed on
    backend: str = "auto"        # auto | openslide | tiffslide

    @property
    def folder_name(self) -> str:
        return f"{resolution_name(self.target_mpp)}_{self.patch_size}px_{self.overlap}px_overlap"

    def key(self, slide_mpp: float) -> str:
        d = {**asdict(self), "slide_mpp": slide_mpp}
        d.pop("backend")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def tile_settings(mag: float | None = None, mpp: float | None = None, tile_size: int = 256, overlap: int = 0,
                  min_tissue: float = 0.5, fill_holes: bool = False, no_tissue: bool = False,
                  thumb_size: int = 1024, backend: str = "auto") -> TileSettings:
    """``TileSettings`` from the options of ``gensis wsi tile`` (``mag`` or ``mpp``; default 20x = 0.5 µm/px);
    bad values are one-line ``UserError``s."""
    from gensis.wsi.geometry import magnification_to_mpp

    if mag is not None and mpp is not None:
        raise UserError("give a magnification (--mag) or a resolution (--mpp), not both")
    if mpp is not None and not (0 < mpp < math.inf):  # nan and inf too (nan failed later with a traceback)
        raise UserError(f"--mpp must be a positive number, got {mpp}")
    if mag is not None and not (0 < mag < math.inf):
        raise UserError(f"--mag must be a positive number, got {mag}")
    if not 0 <= min_tissue <= 1:
        raise UserError(f"--min-tissue must be in [0, 1], got {min_tissue}")
    if thumb_size < 1:  # was a ZeroDivisionError / OpenSlide's 'negative width' per slide
        raise UserError(f"--thumb-size must be >= 1, got {thumb_size}")
    if tile_size < 1:  # these were each slide's failure (one line per slide), after the output folder was made
        raise UserError(f"--tile-size must be >= 1, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise UserError(f"--overlap must be in [0, --tile-size) = [0, {tile_size}), got {overlap}")
    target = mpp if mpp is not None else magnification_to_mpp(mag if mag is not None else 20)
    return TileSettings(target_mpp=target, patch_size=tile_size, overlap=overlap,
                        min_tissue=0.0 if no_tissue else min_tissue, fill_holes=fill_holes,
                        tissue="none" if no_tissue else "otsu", thumb_size=thumb_size, backend=backend)


def mpp_source(slide_mpp: float | None = None, mpp_csv: str | Path | None = None) -> MppSource:
    """Where slides without resolution metadata get theirs: one value for all, and/or a CSV ``slide,mpp``."""
    from gensis.wsi.slide import read_mpp_csv

    if slide_mpp is not None and not (0 < slide_mpp < math.inf):
        raise UserError(f"--slide-mpp must be a positive number, got {slide_mpp}")
    return MppSource(slide_mpp, read_mpp_csv(mpp_csv) if mpp_csv else None)


@dataclass
class SlideResult:
    slide: str
    path: str
    status: str                  # done | skipped (already done) | failed
    n_tiles: int = 0
    n_grid: int = 0
    seconds: float = 0.0
    error: str = ""
    info: dict = field(default_factory=dict)


def tile_slide(path: Path, out: Path, settings: TileSettings, mpp: MppSource | None = None,
               quiet: bool = True) -> SlideResult:
    """Tile one slide into ``out`` (the settings folder). Errors become a failed result naming the slide.
    ``quiet=False``: a progress bar while a thumbnail is read in strips (a slide without a small level), the
    part that takes minutes on a large slide (the tissue mask and the tile grid come from the thumbnail)."""
    t0 = time.time()
    sid = slide_id(path)
    try:
        with open_slide(path, settings.backend) as slide:
            slide_mpp, mpp_source = resolve_mpp(slide, mpp)
            key = settings.key(slide_mpp)
            h5 = out / "patches" / f"{sid}.h5"
            nbytes = Path(path).stat().st_size
            geom = plan_geometry(slide_mpp, settings.target_mpp, slide.level_downsamples, slide.dimensions,
                                 settings.patch_size, settings.overlap, name=str(path))
            grid = geom.grid()
            info = {"level": geom.level, "read_size": geom.read_size, "resampled": geom.resampled,
                    "slide_mpp": slide_mpp, "mpp_source": mpp_source, "backend": slide.backend}
            old = read_tile_attrs(h5)
            if old is not None and old.get("settings_key") == key and \
                    changed_since_tiling(old, slide.dimensions, nbytes) is None:  # another slide, same name: redo
                # its count from the tile file itself, its grid and info as tiling it found them: tiling.json may
                # lack the slide (a killed run's worker finished it, or the kill came as tiling.json was written),
                # which counted it as 0 tiles and recorded no grid and no info
                return SlideResult(sid, str(path), "skipped", n_tiles=len(read_slide_tiles(h5)), n_grid=len(grid),
                                   seconds=time.time() - t0, info=info)
            thumb = slide.thumbnail(settings.thumb_size, bar=None if quiet else f"thumbnail of {sid}")
            w0, h0 = slide.dimensions
            scale = (w0 / thumb.shape[1], h0 / thumb.shape[0])  # level-0 pixels per thumbnail pixel
            if settings.tissue == "none":
                frac = np.ones(len(grid), np.float32)
            else:
                mask = tissue_mask(thumb, fill_holes=settings.fill_holes)
                frac = tile_fractions(mask, grid, geom.patch_size_level0, scale)
            keep = frac >= settings.min_tissue
            coords, frac = grid[keep], frac[keep]
            _save_png(out / "thumbnails" / f"{sid}.png", thumb)
            _save_png(out / "visualization" / f"{sid}.png", outline_tiles(thumb, coords, geom.patch_size_level0, scale))
            attrs = {**geom.to_attrs(), "slide_path": str(Path(path).resolve()), "slide_id": sid, "slide_bytes": nbytes,
                     "backend": slide.backend, "mpp_source": mpp_source,
                     "target_magnification": 10.0 / settings.target_mpp, "thumb_scale_x": scale[0],
                     "thumb_scale_y": scale[1], "min_tissue": settings.min_tissue,
                     "fill_holes": settings.fill_holes, "tissue_method": settings.tissue, "settings_key": key}
            write_slide_tiles(h5, coords, frac, attrs)
            return SlideResult(sid, str(path), "done", len(coords), len(grid), time.time() - t0, info=info)
    except SlideError as e:
        return SlideResult(sid, str(path), "failed", seconds=time.time() - t0, error=str(e))
    except UserError as e:  # named once ('skipped slide a.svs: slide a.svs is at 1 µm/px' before)
        error = str(e) if str(e).startswith(f"slide {path} ") else f"slide {path}: {e}"
        return SlideResult(sid, str(path), "failed", seconds=time.time() - t0, error=error)
    except Exception as e:  # a corrupt tile deep inside a slide: report it, keep the others going
        return SlideResult(sid, str(path), "failed", seconds=time.time() - t0,
                           error=f"slide {path}: {type(e).__name__}: {e}")


def _read_manifest(path: Path, warn: bool = False) -> dict:
    """``tiling.json`` (settings + per-slide status; the tile files themselves are the data), or ``{}`` when
    missing or damaged (a JSONDecodeError / TypeError traceback before): it is then rewritten."""
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        m = None
    if isinstance(m, dict) and isinstance(m.get("slides", {}), dict):
        return m
    if warn:
        print(f"gensis: warning: {path} is damaged; it is rewritten with the slides tiled from now on (the tile "
              f"files are not affected)", file=sys.stderr)
    return {}


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself (no file is added), held while tiling.json is updated."""
    try:
        import fcntl
    except ImportError:  # Windows: no concurrent runs are coordinated
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def outline_tiles(thumb: np.ndarray, coords: np.ndarray, size0: int, scale: tuple[float, float],
                  color=(0, 160, 0)) -> np.ndarray:
    """The thumbnail with each tile's outline drawn. A tile smaller than a thumbnail pixel (small tiles on a large
    slide: 32 px at 20x on a slide longer than 32,768 px with the default 1024-px thumbnail) is one marked pixel
    (PIL refused its inverted box: every such slide failed with "x1 must be greater than or equal to x0")."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(thumb)
    draw = ImageDraw.Draw(im)
    sx, sy = scale
    for x, y in coords:
        x0, y0 = x / sx, y / sy
        draw.rectangle([x0, y0, max(x0, (x + size0) / sx - 1), max(y0, (y + size0) / sy - 1)], outline=color)
    return np.asarray(im)


def _save_png(path: Path, img: np.ndarray) -> None:
    """Atomic, durable PNG write (``gensis.rundir.atomic_save_image``: tmp -> fsync -> rename -> fsync(dir));
    ``gensis.rundir`` imports no torch, so spawned tiling workers start fast."""
    from PIL import Image

    from gensis.rundir import atomic_save_image

    atomic_save_image(Image.fromarray(img), path, format="PNG", compress_level=1)


# A Ctrl-C reaches the tiling workers too (one process group): the slide each is on stops where it is (its files
# are written atomically, so none is half-written), and a worker then starts no other slide. Without this, the
# pool caught the KeyboardInterrupt per slide and went on with the slides queued to it.
_interrupted = False


def _worker_init(parent: int) -> None:
    # a worker ends with the main process, however that ends: on a SIGKILL (the OOM killer) the workers, blocked on
    # the pool's queue (whose pipe each holds open: no end of file), outlived it for ever, holding its stdout
    die_with_parent(parent)
    signal.signal(signal.SIGINT, _worker_sigint)
    try:
        _release_sigint(set())  # held since the worker started (``_hold_sigint``): one that came meanwhile lands now
    except KeyboardInterrupt:
        pass  # recorded: this worker starts no slide


# A Ctrl-C while a worker was still starting (importing gensis) printed its KeyboardInterrupt traceback, one per
# worker, over the "gensis: interrupted" line. Workers now start with SIGINT blocked (the signal mask is inherited
# through fork and exec): a Ctrl-C is held until ``_worker_init`` has put ``_worker_sigint`` in place.
def _hold_sigint() -> set[int]:
    """Block SIGINT in this thread; returns the signals blocked before (for ``_release_sigint``)."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        return set()
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}))


def _release_sigint(before: set[int]) -> None:
    """Unblock SIGINT unless it was blocked ``before``; a Ctrl-C held meanwhile raises KeyboardInterrupt here."""
    if hasattr(signal, "pthread_sigmask") and signal.SIGINT not in before:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _worker_sigint(signum: int, frame: object) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _tile_in_worker(path: Path, out: Path, settings: TileSettings, mpp: MppSource | None) -> SlideResult:
    if _interrupted:
        raise KeyboardInterrupt  # queued to this worker before the Ctrl-C: not started
    return tile_slide(path, out, settings, mpp)


def tile_slides(slides: list[Path], out_root: str | Path, settings: TileSettings, mpp: MppSource | None = None,
                workers: int = 1, quiet: bool = False) -> tuple[Path, list[SlideResult]]:
    """Tile every slide into ``out_root/<settings.folder_name>``; returns (that folder, per-slide results)."""
    from gensis.progress import progress
    from gensis.rundir import atomic_write_json

    if not slides:
        raise UserError("no slides given")
    if workers < 1:
        raise UserError(f"--workers must be >= 1 (slides tiled in parallel), got {workers}")
    from gensis.rundir import make_folder, remove_stale_temps

    from gensis.folder_kind import refuse_other_kind

    refuse_other_kind(out_root, "tiles")  # a run, a bank, bags ...: the tiles folder was made inside it
    out = Path(out_root) / settings.folder_name
    make_folder(out)
    for folder in (out, out / "patches", out / "thumbnails", out / "visualization"):
        remove_stale_temps(folder)  # a killed run's temporary files (marked, their pid gone)
    manifest_path = out / "tiling.json"
    _read_manifest(manifest_path, warn=True)  # a damaged one is named once, then rewritten
    results: list[SlideResult] = []
    bar = progress(total=len(slides), desc="tiling", unit="slide", disable=quiet or len(slides) == 1)
    # Each slide's "skipped" line is held until every slide before it in the list has finished, then printed:
    # the lines come in the order of the slide list whatever order the workers finish in (the same output on
    # every run, easy to match against the list), and a line waits at most for the slides still being tiled
    # before it. The progress bar, its counts and tiling.json follow completion, as they happen.
    held: dict[int, str] = {}  # slide position -> its line ("" for none), until every earlier one is out
    shown = 0  # lines of slides [0, shown) are out

    def show(upto: int | None = None) -> None:
        """Print the held lines of the finished prefix of the list (``upto``: all held ones, at an interrupt)."""
        nonlocal shown
        while shown in held or (upto is not None and shown < upto):
            line = held.pop(shown, "")
            if line:
                bar.write(line, file=sys.stderr)
            shown += 1

    def record(i: int, r: SlideResult) -> None:
        results.append(r)
        with _folder_lock(out):  # re-read: another `wsi tile` on this folder (a job array) may have added slides
            manifest = _read_manifest(manifest_path)
            manifest["settings"] = asdict(settings)
            prev = manifest.setdefault("slides", {}).get(r.slide, {})
            if not (r.status == "skipped" and prev.get("status") == "done"):  # a tiled slide it lacks: done
                entry = {k: v for k, v in asdict(r).items() if k != "slide"}
                manifest["slides"][r.slide] = {**entry, "status": "done" if r.status == "skipped" else r.status}
            atomic_write_json(manifest_path, manifest)
        # a single slide's error is the command's error line
        held[i] = f"gensis: skipped {r.error}" if r.status == "failed" and len(slides) > 1 else ""
        show()
        bar.update(1)
        bar.set_postfix(tiles=sum(x.n_tiles for x in results), failed=sum(x.status == "failed" for x in results),
                        refresh=False)

    if workers <= 1 or len(slides) == 1:
        for i, p in enumerate(slides):
            record(i, tile_slide(Path(p), out, settings, mpp, quiet=quiet or len(slides) > 1))  # one: its own bar
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # openslide/tiffslide handles and thread pools do not survive fork
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(os.getpid(),)) as pool:
            pending: dict = {}
            held_mask = _hold_sigint()  # the workers start (in submit) with a Ctrl-C held: see _worker_init
            try:
                try:
                    for i, p in enumerate(slides):
                        pending[pool.submit(_tile_in_worker, Path(p), out, settings, mpp)] = (i, p)
                finally:
                    _release_sigint(held_mask)  # a Ctrl-C meanwhile is raised here, inside the try
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in sorted(done, key=lambda f: pending[f][0]):
                        i, p = pending.pop(fut)
                        try:
                            record(i, fut.result())
                        except Exception as e:  # the worker process died (e.g. a crash inside a C library)
                            record(i, SlideResult(slide_id(p), str(p), "failed",
                                                  error=f"slide {p}: worker died: {e}"))
            except KeyboardInterrupt:  # slides not started are dropped (the pool waited for them all before)
                pool.shutdown(wait=True, cancel_futures=True)
                show(upto=max(held, default=-1) + 1)  # the lines of the slides that did finish, still in order
                raise
    bar.close()
    order = {str(p): i for i, p in enumerate(slides)}
    results.sort(key=lambda r: order.get(r.path, 0))
    return out, results
