"""Whole-slide benchmarks: tiling time per slide, and tiles/s read lazily from the slide vs from extracted PNGs.

    .venv/bin/python benchmarks/bench_wsi.py                                   # the real CMU-1 region (dev data)
    .venv/bin/python benchmarks/bench_wsi.py --slide S.svs --mag 20 --tile-size 256
    .venv/bin/python benchmarks/bench_wsi.py --synthetic 16384                 # a 16384² 3-level SVS made here

Tiling: `gensis.wsi.tiler.tile_slides` on one slide, from scratch each repetition (thumbnail, tissue mask,
grid, HDF5, PNGs), median of --reps. Reading: the same tiles, in the same random order, (a) read lazily from
the slide by `TileImageSet.get` (open handle, region read, resize if needed) and (b) read from PNG files made
once by `gensis wsi export` (PIL decode); repetitions interleaved, median tiles/s of each, one process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_SLIDE = Path("/work/shared/data/wsi/cmu-1-small-region.svs")


def synthetic_slide(path: Path, side: int) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "wsi"))
    from wsi_slides import make_svs, slide_image

    img = slide_image(side, side, [(side // 8, side // 8, side // 2, side // 3), (side // 2, side // 2, side // 3, side // 3)])
    return make_svs(path, img, mpp=0.25, downsamples=(1, 4, 16), tile=256, compression="jpeg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide", default=None)
    ap.add_argument("--synthetic", type=int, default=None, metavar="SIDE", help="make a SIDE×SIDE synthetic slide")
    ap.add_argument("--mag", type=float, default=20)
    ap.add_argument("--tile-size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=200, help="tiles read per repetition")
    args = ap.parse_args()

    from gensis.data.sources import _load_folder
    from gensis.wsi.dataset import TileImageSet, export_tiles
    from gensis.wsi.slide import open_slide
    from gensis.wsi.tiler import TileSettings, tile_slides

    tmp = Path(tempfile.mkdtemp(prefix="bench-wsi-"))
    if args.synthetic:
        t0 = time.time()
        slide = synthetic_slide(tmp / "synthetic.svs", args.synthetic)
        print(f"synthetic slide {args.synthetic}x{args.synthetic} written in {time.time() - t0:.1f} s")
    else:
        slide = Path(args.slide) if args.slide else DEFAULT_SLIDE
        if not slide.is_file():
            sys.exit(f"slide not found: {slide} (give --slide or --synthetic)")
    with open_slide(slide) as s:
        print(f"slide {slide.name}: {s.dimensions[0]}x{s.dimensions[1]} px, {s.level_count} level(s), "
              f"mpp {s.metadata_mpp}, backend {s.backend}")
    settings = TileSettings(target_mpp=10 / args.mag, patch_size=args.tile_size)
    times = []
    for r in range(args.reps):
        t0 = time.perf_counter()
        out, res = tile_slides([slide], tmp / f"tiles{r}", settings, quiet=True)
        times.append(time.perf_counter() - t0)
    print(f"tiling at {args.mag:g}x, {args.tile_size} px: {res[0].n_tiles} tissue tiles of {res[0].n_grid}; "
          f"median {statistics.median(times):.2f} s per slide over {args.reps} runs ({', '.join(f'{t:.2f}' for t in times)})")

    ds = TileImageSet(out)
    png_dir = tmp / "png"
    t0 = time.perf_counter()
    export_tiles(ds, png_dir, quiet=True)
    print(f"export of {len(ds)} tiles to PNG: {time.perf_counter() - t0:.1f} s")
    folder = _load_folder(png_dir)
    by_name = {p.name: i for i, p in enumerate(folder.paths)}
    rng = np.random.default_rng(0)
    order = rng.choice(len(ds), min(args.n, len(ds)), replace=False)
    png_idx = [by_name[f"{ds.slides[ds.location(i)[0]].slide_id}_{ds.location(i)[1]}_{ds.location(i)[2]}.png"]
               for i in order]
    ds.get(int(order[0]))  # open the slide handle once, as a DataLoader worker keeps it open
    lazy, png = [], []
    for r in range(args.reps):
        for which in (("lazy", "png") if r % 2 == 0 else ("png", "lazy")):
            t0 = time.perf_counter()
            if which == "lazy":
                for i in order:
                    ds.get(int(i))
            else:
                for i in png_idx:
                    folder.get(i)
            dt = time.perf_counter() - t0
            (lazy if which == "lazy" else png).append(len(order) / dt)
    print(f"tiles/s over {len(order)} random tiles, median of {args.reps}: lazy from slide {statistics.median(lazy):.0f}, "
          f"from PNG files {statistics.median(png):.0f}")


if __name__ == "__main__":
    main()
