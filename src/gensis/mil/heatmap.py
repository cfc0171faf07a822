"""Attention heatmaps: each tile's ABMIL attention painted over the slide thumbnail.

Attention weights sum to one over a bag, so raw values shrink with bag size; tiles are coloured by the rank
of their weight within the slide (0 = least, 1 = most attended), as CLAM does, blended over the thumbnail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEATMAPS_NEED = "mil predict's heatmaps (--no-heatmaps: predictions only)"


def attention_heatmap(thumb: np.ndarray, coords: np.ndarray, attention: np.ndarray, size0: int,
                      scale: tuple[float, float], alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """H×W×3 uint8: ``thumb`` with every tile (level-0 ``coords``, ``size0`` px) filled by its attention rank."""
    from gensis.plots import matplotlib_module

    matplotlib = matplotlib_module(HEATMAPS_NEED)
    h, w = thumb.shape[:2]
    value = np.zeros((h, w), np.float32)
    covered = np.zeros((h, w), bool)
    rank = np.argsort(np.argsort(attention)) / max(len(attention) - 1, 1)   # (K,) in [0, 1]
    sx, sy = scale
    for (x, y), r in zip(coords, rank):
        c0, r0 = int(x / sx), int(y / sy)
        c1, r1 = max(c0 + 1, int(np.ceil((x + size0) / sx))), max(r0 + 1, int(np.ceil((y + size0) / sy)))
        value[r0:r1, c0:c1] = np.maximum(value[r0:r1, c0:c1], r)
        covered[r0:r1, c0:c1] = True
    colors = (matplotlib.colormaps[cmap](value)[..., :3] * 255).astype(np.float32)
    out = thumb.astype(np.float32)
    out[covered] = (1 - alpha) * out[covered] + alpha * colors[covered]
    return out.clip(0, 255).astype(np.uint8)


def heatmap_thumbnail(bag_attrs: dict, slide: str) -> Path:
    """The thumbnail a bag's heatmap is drawn on; a one-line ``UserError`` when the bag names none or it is gone
    (checked for every slide before `mil predict` writes anything)."""
    from gensis.errors import UserError

    slide = bag_attrs.get("slide_id") or slide
    if not bag_attrs.get("thumbnail"):  # a bag written by other code than `gensis wsi embed`
        raise UserError(f"the bag of slide {slide} names no thumbnail to draw its heatmap on (bags from "
                        f"`gensis wsi embed` do): pass --no-heatmaps")
    thumb_path = Path(bag_attrs["thumbnail"])
    if not thumb_path.is_file():
        raise UserError(f"thumbnail {thumb_path} of slide {slide} is missing (its tiles folder moved or removed since "
                        f"`wsi embed`?): pass --no-heatmaps, or embed the tiles where they are now into another --out")
    return thumb_path


def save_heatmap(path: Path, bag_attrs: dict, coords: np.ndarray, attention: np.ndarray) -> Path:
    """Write the heatmap of one bag next to nothing else; needs the tiles' thumbnail named in the bag."""
    from PIL import Image

    from gensis.wsi.tiler import _save_png

    thumb_path = heatmap_thumbnail(bag_attrs, path.stem)
    thumb = np.asarray(Image.open(thumb_path).convert("RGB"))
    img = attention_heatmap(thumb, coords, attention, int(bag_attrs["patch_size_level0"]),
                            (float(bag_attrs["thumb_scale_x"]), float(bag_attrs["thumb_scale_y"])))
    _save_png(path, img)
    return path
