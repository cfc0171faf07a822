"""Synthetic whole-slide images for the tests: tiled pyramidal TIFFs written with tifffile, tissue at known places.

``make_svs`` writes an Aperio-style SVS (level 0, a stripped thumbnail as the 2nd directory, then the lower
levels, ``MPP = ...`` in the description): OpenSlide and tiffslide both read its pyramid and resolution.
``make_plain_tiff`` writes an untiled, single-level TIFF: OpenSlide refuses it, tiffslide reads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BACKGROUND = 240


def slide_image(width: int, height: int, boxes: list[tuple[int, int, int, int]], seed: int = 0,
                base: tuple[int, int, int] = (200, 90, 170)) -> np.ndarray:
    """H×W×3 uint8: near-white glass, and H&E-like pink/purple texture in each (x, y, w, h) box."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), BACKGROUND, np.uint8)
    img += rng.integers(0, 6, img.shape, dtype=np.uint8)  # mild noise on glass
    for x, y, w, h in boxes:
        tex = rng.integers(-40, 40, (h, w, 3), dtype=np.int16)
        img[y:y + h, x:x + w] = np.clip(np.array(base, np.int16) + tex, 0, 255).astype(np.uint8)
    return img


def make_svs(path: Path, img: np.ndarray, mpp: float | None = 0.25, downsamples=(1, 2, 4), tile: int = 128,
             compression: str = "zlib") -> Path:
    import tifffile

    h, w = img.shape[:2]
    desc = f"Aperio Image Library v12.0.0\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) RGB|AppMag = {10 / mpp if mpp else 20:g}"
    if mpp is not None:
        desc += f"|MPP = {mpp}"
    opts = dict(photometric="rgb", compression=compression, metadata=None)
    with tifffile.TiffWriter(path) as tw:
        tw.write(img, tile=(tile, tile), description=desc, **opts)
        tw.write(img[::16, ::16], description="Aperio Image Library v12.0.0\nthumbnail", **opts)
        for d in downsamples[1:]:
            tw.write(np.ascontiguousarray(img[::d, ::d]), tile=(tile, tile),
                     description="Aperio Image Library v12.0.0\nlevel", **opts)
    return path


def make_plain_tiff(path: Path, img: np.ndarray, mpp: float | None = None) -> Path:
    import tifffile

    kw = {}
    if mpp is not None:
        kw = dict(resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER")
    tifffile.imwrite(path, img, photometric="rgb", metadata=None, **kw)
    return path
