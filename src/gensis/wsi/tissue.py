"""Tissue detection on a slide thumbnail: Otsu's threshold on HSV saturation.

Stained tissue is coloured (high saturation); glass, background and most dust are grey or white (low
saturation), so one global threshold on the saturation channel separates them on most H&E slides (the classic
CLAM / Trident "Otsu on saturation" rule). Holes inside tissue (lumens, fat) are background unless
``fill_holes``. The mask lives at thumbnail resolution; ``tile_fractions`` turns it into a per-tile tissue
fraction through an integral image, so checking a million tiles costs one pass over the thumbnail.
"""

from __future__ import annotations

import numpy as np


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu (1979): the uint8 threshold t maximising the between-class variance of {v <= t} and {v > t}."""
    hist = np.bincount(np.asarray(values, np.uint8).ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    if total == 0:
        return 0.0
    levels = np.arange(256, dtype=np.float64)
    w0 = np.cumsum(hist)                     # pixels <= t
    w1 = total - w0
    m0 = np.cumsum(hist * levels)
    mu0 = np.divide(m0, w0, out=np.zeros(256), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros(256), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(np.argmax(between))


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation (max - min) / max of an H×W×3 uint8 image, scaled to 0..255."""
    mx = rgb.max(axis=2).astype(np.int32)
    mn = rgb.min(axis=2).astype(np.int32)
    return np.where(mx > 0, (mx - mn) * 255 // np.maximum(mx, 1), 0).astype(np.uint8)


def tissue_mask(thumb: np.ndarray, fill_holes: bool = False, min_saturation: int = 15) -> np.ndarray:
    """Boolean H×W tissue mask of a thumbnail. ``min_saturation`` floors the threshold so that a blank slide
    (only noise) yields no tissue instead of half of its noise."""
    s = saturation(thumb)
    t = max(otsu_threshold(s), float(min_saturation))
    mask = s > t
    if fill_holes:
        from scipy.ndimage import binary_fill_holes

        mask = binary_fill_holes(mask)
    return mask


def tile_fractions(mask: np.ndarray, xy: np.ndarray, size0: int, scale: tuple[float, float]) -> np.ndarray:
    """Tissue fraction of each level-0 tile (x, y, size0×size0) from a mask with ``scale`` = level-0 pixels per
    mask pixel (sx, sy). Every tile covers at least one mask pixel."""
    if len(xy) == 0:
        return np.zeros(0, np.float32)
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), 0), 1)
    sx, sy = scale
    c0 = np.clip(np.floor(xy[:, 0] / sx).astype(np.int64), 0, w - 1)
    r0 = np.clip(np.floor(xy[:, 1] / sy).astype(np.int64), 0, h - 1)
    c1 = np.clip(np.ceil((xy[:, 0] + size0) / sx).astype(np.int64), c0 + 1, w)
    r1 = np.clip(np.ceil((xy[:, 1] + size0) / sy).astype(np.int64), r0 + 1, h)
    inside = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
    return (inside / ((r1 - r0) * (c1 - c0))).astype(np.float32)
