"""PNG grids of the E-LDM, laid out like the paper's figures.

- generative grid (Fig. 7-9): each row is a real held-out image, then K images generated from its embedding
  (K different seeds).
- interpolation grid (Fig. 11-13): each row is real image 1 (α = 1), images generated from the interpolated
  embedding at α = 0.8 … 0.2 (all with the same seed, so only the condition changes), then real image 2 (α = 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from gensis.errors import UserError
from gensis.folder_kind import FIGURES_FORMAT as MARKER_FORMAT, FIGURES_MARKER as MARKER, FIGURES_PNGS as PNGS

GAP = 2  # pixels between cells (before scaling)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(images, [size, size], antialias=True)


def compose(rows: Sequence[Sequence[torch.Tensor]], header: Sequence[str], scale: int = 4,
            row_labels: Sequence[str] | None = None, separators: Sequence[int] = ()):
    """A PIL image: ``rows`` of uint8 (3, S, S) cells, a text header per column, an optional label per row.

    ``separators``: column indices after which a wider gap is drawn (real | synthetic).
    """
    from PIL import Image, ImageDraw

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    s = rows[0][0].shape[-1] * scale
    gap = GAP * scale // 2 + 2
    wide = 3 * gap
    head, left = 14, (8 * max((len(t) for t in row_labels), default=0) + 6 if row_labels else 0)
    xs, x = [], left
    for c in range(n_cols):
        xs.append(x)
        x += s + (wide if c in separators else gap)
    canvas = Image.new("RGB", (x - gap, head + n_rows * (s + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, text in enumerate(header):
        if c < n_cols:
            draw.text((xs[c] + 2, 1), text, fill="black")
    for r, row in enumerate(rows):
        y = head + r * (s + gap)
        if row_labels:
            draw.text((2, y + s // 2 - 5), row_labels[r], fill="black")
        for c, cell in enumerate(row):
            arr = cell.permute(1, 2, 0).numpy().astype(np.uint8)  # (S, S, 3)
            im = Image.fromarray(arr).resize((s, s), Image.NEAREST)
            canvas.paste(im, (xs[c], y))
    return canvas


def generative_grid(gen, images: torch.Tensor, per_image: int, seed: int = 0, scale: int = 4,
                    row_labels: Sequence[str] | None = None, **settings):
    """Fig. 7-9: real image, then ``per_image`` samples from its embedding. ``images``: uint8 (R, 3, H, W)."""
    r = len(images)
    e = gen.encode(images)  # (R, D)
    e_rep = e.repeat_interleave(per_image, dim=0)  # (R·K, D)
    seeds = [seed + j for _ in range(r) for j in range(per_image)]
    out = gen.generate(e_rep, seeds, **settings).view(r, per_image, 3, gen.image_size, gen.image_size)
    real = _resize(images, gen.image_size)
    rows = [[real[i]] + list(out[i]) for i in range(r)]
    header = ["real"] + [f"synthetic {j + 1}" if j == 0 else f"{j + 1}" for j in range(per_image)]
    return compose(rows, header, scale, row_labels, separators=(0,))


def interpolation_grid(gen, images1: torch.Tensor, images2: torch.Tensor, alphas: Sequence[float],
                       method: str = "slerp", seed: int = 0, scale: int = 4,
                       row_labels: Sequence[str] | None = None, **settings):
    """Fig. 11-13: real image 1 (α=1), samples from interp(e1, e2, α) for each α, real image 2 (α=0)."""
    p = len(images1)
    e1, e2 = gen.encode(images1), gen.encode(images2)  # (P, D)
    a = torch.tensor([float(x) for x in alphas])  # (A,)
    n_a = len(a)
    e1r, e2r = e1.repeat_interleave(n_a, 0), e2.repeat_interleave(n_a, 0)  # (P·A, D)
    seeds = [seed + i for i in range(p) for _ in range(n_a)]  # one seed per row: only the condition changes
    out = gen.interpolate(e1r, e2r, a.repeat(p), method=method, seeds=seeds, **settings)
    out = out.view(p, n_a, 3, gen.image_size, gen.image_size)
    r1, r2 = _resize(images1, gen.image_size), _resize(images2, gen.image_size)
    rows = [[r1[i]] + list(out[i]) + [r2[i]] for i in range(p)]
    header = ["a=1 real"] + [f"a={x:g}" for x in alphas] + ["a=0 real"]
    return compose(rows, header, scale, row_labels, separators=(0, n_a))


def pick_rows(ds, n: int, seed: int = 0) -> np.ndarray:
    """``n`` indices of ``ds``, one class after another when it is labelled (so a grid shows every class)."""
    rng = np.random.default_rng(seed)
    if ds.labels is None:
        return np.sort(rng.choice(len(ds), min(n, len(ds)), replace=False))
    classes = np.unique(ds.labels)
    out = []
    per = {c: rng.permutation(np.where(ds.labels == c)[0]).tolist() for c in classes}
    while len(out) < min(n, len(ds)):
        for c in classes:
            if per[c] and len(out) < n:
                out.append(per[c].pop())
    return np.asarray(out)


def pick_pairs(ds, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs of indices, of different classes when labelled (as the paper's Fig. 11)."""
    first = pick_rows(ds, n, seed)
    rng = np.random.default_rng(seed + 1)
    second = []
    for i in first:
        for _ in range(100):
            j = int(rng.integers(len(ds)))
            if j != i and (ds.labels is None or ds.labels[j] != ds.labels[i]):
                break
        second.append(j)
    return first, np.asarray(second)


def write_figures(gen, ds, out: str | Path, fig: dict, **settings) -> list[Path]:
    """Both grids for held-out images of ``ds``; returns the PNG paths."""
    from gensis.data.loader import load_images
    from gensis.folder_kind import require_own_or_empty
    from gensis.rundir import atomic_save_image, atomic_write_json, lock_folder, remove_stale_temps

    require_own_or_empty(out, "eldm-figures")  # never into a user's folder (e.g. a class folder of their images)
    out = Path(out)

    def load(idx):  # (B, 3, S, S): a folder's images of any size, as the E-LDM's training read them
        return load_images(ds, idx, gen.image_size)

    def names(idx):
        if ds.labels is None:
            return None
        cls = ds.classes or [str(c) for c in range(ds.num_classes)]
        return [cls[int(ds.labels[int(i)])] for i in idx]

    rows = pick_rows(ds, int(fig["rows"]), int(fig["seed"]))
    g = generative_grid(gen, load(rows), int(fig["per_image"]), int(fig["seed"]), int(fig["scale"]),
                        names(rows), **settings)
    p1 = out / PNGS[0]
    lock_folder(out)  # made only once there is something to write (a bad setting leaves no folder); one process
    require_own_or_empty(out, "eldm-figures")  # again under the lock: another process may have written it meanwhile
    remove_stale_temps(out)  # a killed sample's temporary PNG (marked, its pid gone)
    atomic_write_json(out / MARKER, {"format": MARKER_FORMAT, "files": list(PNGS)})  # first: the folder is ours
    atomic_save_image(g, p1)
    a, b = pick_pairs(ds, int(fig["pairs"]), int(fig["seed"]))
    labels = None if ds.labels is None else [f"{x}>{y}" for x, y in zip(names(a), names(b))]
    g = interpolation_grid(gen, load(a), load(b), fig["alphas"], fig["method"], int(fig["seed"]),
                           int(fig["scale"]), labels, **settings)
    p2 = out / PNGS[1]
    atomic_save_image(g, p2)
    return [p1, p2]


def sample_run(eldm: str | Path, data: str, out: str | Path, overrides=None, method: str | None = None,
               seed: int | None = None, guidance: float | None = None, steps: int | None = None,
               sampler: str | None = None, device: str = "auto", amp: str = "auto") -> list[Path]:
    """``gensis eldm sample``: both grids of a finished E-LDM run for the held-out (val) images of ``data``
    (``@train``/``@all`` picks another split); settings: the run's ``figures``, then ``overrides``,
    ``method``, ``seed``. Returns the PNG paths."""
    from gensis.data.sources import open_data
    from gensis.eldm.evaluate import require_held_out
    from gensis.eldm.model import HELD_OUT_DATA_KEYS, finished_run_config, load_generator
    from gensis.folder_kind import require_own_or_empty
    from gensis.rundir import held_locks, lock_folder, release_folder, removed_if_left_empty

    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise UserError(f"--seed must be an integer >= 0 (figures.seed), got {seed}")  # was numpy's traceback
    require_own_or_empty(out, "eldm-figures")  # before anything is loaded; nothing is written when refused
    held = held_locks()
    try:
        if Path(out).is_dir():
            lock_folder(out)  # a second sample on this --out is refused now (a new folder: when it writes)
        cfg = finished_run_config(eldm, overrides, reads=("figures", *HELD_OUT_DATA_KEYS), command="gensis eldm sample")
        fig = cfg.figures.to_dict()
        if method:
            fig["method"] = method
        if seed is not None:
            fig["seed"] = seed
        ds = open_data(data, "val", cfg.data.val_fraction, cfg.data.split_seed,
                       skip_bad_images=bool(cfg.data.skip_bad_images))  # as the run was trained (or data.* override)
        require_held_out(ds, data)
        gen = load_generator(eldm, device=device, amp=amp, guidance=guidance, steps=steps, sampler=sampler)
        with removed_if_left_empty(out):  # failing before its first file (e.g. a full disk): no empty --out left
            return write_figures(gen, ds, out, fig)
    finally:  # free again when done (from Python too), unless the caller held it already (the demo's stage)
        for folder in held_locks() - held:
            release_folder(folder)
