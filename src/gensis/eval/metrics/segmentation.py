"""DAVIS video object segmentation measures: J (region similarity), F (contour accuracy), statistics.

Equal to the DAVIS-2017 toolkit (davisvideochallenge/davis2017-evaluation @ ac7c43f, ``davis2017/metrics.py``
and ``utils.py``; Perazzi et al., CVPR 2016), rewritten without OpenCV and scikit-image:

    J = |S ∩ G \\ V| / |S ∪ G \\ V|              (1 when the union is empty)          V = void pixels
    F = 2 P R / (P + R) on boundaries: b(M) = pixels whose right, lower or lower-right neighbour differs
        (``_seg2bmap``, of the mask with void pixels cleared); a boundary pixel matches when the other
        mask's boundary, dilated by a disk of radius r, covers it;
        r = bound_th if bound_th >= 1 else ceil(bound_th · ‖(H, W)‖)  (0.008 → 1 px at 60×80, 5 px at 480p)
        P = matched fraction of the segmentation's boundary, R = of the annotation's;
        empty boundaries: none in S but some in G → P=1, R=0; some in S, none in G → P=0, R=1; none → 1, 1
    statistics of a per-frame sequence: mean (nanmean), recall (fraction > 0.5), decay = mean of the
        first quarter − mean of the last quarter (4 bins of ``round(linspace(1, n, 5)) − 1``).

One deviation: the toolkit stores the bin edges as uint8, which wraps for sequences of more than 256
frames; here they are int64 (identical up to 256 frames).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.ndimage import binary_dilation

DEFAULT_BOUND_TH = 0.008


def db_eval_iou(annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None = None):
    """J of one frame (H, W) → float, or of frames (T, H, W) → (T,)."""
    annotation = np.asarray(annotation).astype(bool)
    segmentation = np.asarray(segmentation).astype(bool)
    if annotation.shape != segmentation.shape:
        raise ValueError(f"annotation {annotation.shape} and segmentation {segmentation.shape} differ in shape")
    keep = np.ones_like(segmentation) if void_pixels is None else ~np.asarray(void_pixels).astype(bool)
    inters = np.sum(segmentation & annotation & keep, axis=(-2, -1))
    union = np.sum((segmentation | annotation) & keep, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inters / union
    if np.ndim(j) == 0:
        return 1.0 if np.isclose(union, 0) else float(j)
    j[np.isclose(union, 0)] = 1
    return j


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Boundary map of a binary (H, W) mask (DAVIS ``_seg2bmap`` at the mask's own size)."""
    seg = np.asarray(seg).astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def disk(radius: int) -> np.ndarray:
    """scikit-image's ``disk(radius)``: the (2r+1)² grid points with x² + y² ≤ r²."""
    r = int(radius)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y) <= r * r


def f_measure(foreground_mask: np.ndarray, gt_mask: np.ndarray, void_pixels: np.ndarray | None = None,
              bound_th: float = DEFAULT_BOUND_TH) -> float:
    """Contour accuracy F of one frame (DAVIS ``f_measure``)."""
    fg = np.asarray(foreground_mask).astype(bool)
    gt = np.asarray(gt_mask).astype(bool)
    void = np.zeros_like(fg) if void_pixels is None else np.asarray(void_pixels).astype(bool)
    bound_pix = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(fg.shape))
    fg_boundary = seg2bmap(fg & ~void)
    gt_boundary = seg2bmap(gt & ~void)
    se = disk(bound_pix)
    fg_dil = binary_dilation(fg_boundary, structure=se)
    gt_dil = binary_dilation(gt_boundary, structure=se)
    gt_match = gt_boundary & fg_dil
    fg_match = fg_boundary & gt_dil
    n_fg, n_gt = int(fg_boundary.sum()), int(gt_boundary.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision, recall = fg_match.sum() / float(n_fg), gt_match.sum() / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_eval_boundary(annotation: np.ndarray, segmentation: np.ndarray, void_pixels: np.ndarray | None = None,
                     bound_th: float = DEFAULT_BOUND_TH):
    """F of one frame (H, W) → float, or of frames (T, H, W) → (T,)."""
    annotation, segmentation = np.asarray(annotation), np.asarray(segmentation)
    if annotation.shape != segmentation.shape:
        raise ValueError(f"annotation {annotation.shape} and segmentation {segmentation.shape} differ in shape")
    if annotation.ndim == 2:
        return f_measure(segmentation, annotation, void_pixels, bound_th)
    if annotation.ndim != 3:
        raise ValueError(f"masks must be (H, W) or (T, H, W), got {annotation.shape}")
    return np.array([f_measure(segmentation[t], annotation[t], None if void_pixels is None else void_pixels[t],
                               bound_th) for t in range(annotation.shape[0])])


def db_statistics(per_frame_values: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of per-frame J or F values (DAVIS ``db_statistics``)."""
    v = np.asarray(per_frame_values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        M = np.nanmean(v)
        O = np.nanmean(v > 0.5)
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
    bins = [v[ids[i]:ids[i + 1] + 1] for i in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        D = np.nanmean(bins[0]) - np.nanmean(bins[3])
    return float(M), float(O), float(D)
