"""``gensis bank show``: a PNG grid of bank entries, one row per image:
real | generative k=0..K-1 | for each α: interpolation, then the secondary image it was mixed with."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gensis.bank.reader import BankReader
from gensis.errors import UserError
from gensis.figure_file import check_figure_out, pnginfo

GRID_SOFTWARE = "gensis bank show"  # the PNG's Software chunk: a grid this command wrote, replaced on a rerun


def _cell(img: np.ndarray | None, cell: int) -> "Image.Image":
    from PIL import Image

    if img is None:
        return Image.new("RGB", (cell, cell), (200, 200, 200))
    im = Image.fromarray(np.ascontiguousarray(img))
    w, h = im.size
    side = min(w, h)
    im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    return im.resize((cell, cell), Image.NEAREST if side < cell else Image.BICUBIC)


def show_bank(path: str | Path, out: str | Path, n: int = 6, data: str | None = None, seed: int = 0,
              indices: list[int] | None = None, cell: int | None = None) -> Path:
    """Write the grid to ``out`` (PNG); returns its path. ``out`` must name a new ``.png`` file or a grid this
    command wrote (``gensis.figure_file``): a bank's header, a config, weights or a figure of the user's given as
    ``--out`` by mistake are never replaced."""
    from PIL import Image, ImageDraw

    check_figure_out(out, GRID_SOFTWARE, "a grid")
    if indices is None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise UserError(f"--n must be an integer >= 1 (rows of the grid), got {n}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise UserError(f"--seed must be an integer >= 0, got {seed}")
    reader = BankReader(path)
    reader.check_complete()
    h = reader.header
    if indices is None:
        rng = np.random.default_rng(seed)
        indices = np.sort(rng.choice(reader.num_images, min(n, reader.num_images), replace=False)).tolist()
    idx = np.asarray(indices, np.int64)
    ds = _open_dataset(h, data, reader.skip_bad_images)
    S = reader.image_size
    cell = cell or max(S, 96)
    cols = ["real"] + [f"generative\nk={k}" for k in range(reader.num_generative)]
    for a in reader.alphas:
        cols += [f"interpolated\nalpha={a:g}", "secondary"]
    rows = []
    gens = [reader.generative_batch(idx, np.full(len(idx), k)) for k in range(reader.num_generative)]
    ints = [reader.interpolated_batch(idx, np.full(len(idx), a)) for a in reader.alphas]
    for r, i in enumerate(idx):
        row = [ds.get(int(i)) if ds is not None else None]
        row += [g[r].permute(1, 2, 0).numpy() for g in gens]
        for imgs, sec in ints:
            row += [imgs[r].permute(1, 2, 0).numpy(), ds.get(int(sec[r])) if ds is not None else None]
        rows.append(row)
    pad, top, left = 4, 30, 60
    W = left + len(cols) * (cell + pad) + pad
    H = top + len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(cols):
        draw.multiline_text((left + pad + c * (cell + pad), 3), name, fill=(0, 0, 0), spacing=2)
    for r, (i, row) in enumerate(zip(idx, rows)):
        y = top + pad + r * (cell + pad)
        draw.text((4, y + cell // 2 - 6), f"#{int(i)}", fill=(0, 0, 0))
        for c, img in enumerate(row):
            canvas.paste(_cell(img, cell), (left + pad + c * (cell + pad), y))
    out = Path(out)
    from gensis.rundir import atomic_save_image, make_folder

    make_folder(out.parent)
    atomic_save_image(canvas, out, pnginfo=pnginfo(GRID_SOFTWARE))
    return out


def _open_dataset(h: dict, data: str | None, skip_bad_images: bool = False):
    """The bank's dataset (to show real images), or None with a warning when it cannot be opened."""
    from gensis.data.sources import open_data

    src = h["sources"]
    spec = data or src.get("data")
    try:
        ds = open_data(spec, "train", src.get("val_fraction", 0.2), src.get("split_seed", 0), src.get("limit"),
                       skip_bad_images)  # read as the bank's generation read it
    except UserError as e:
        print(f"[gensis] real images not shown: {e}", file=sys.stderr)
        return None
    if ds.identity != src["data_identity"]:
        print(f"[gensis] real images not shown: dataset '{spec}' is not the one the bank was made from "
              f"(identity {ds.identity} != {src['data_identity']})", file=sys.stderr)
        return None
    return ds
