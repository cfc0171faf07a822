"""DAVIS-2017 semi-supervised video object segmentation by label propagation (DINO ``eval_video_segmentation.py``).

Protocol (Caron et al., 2021, Sec. 4.2.2 / App.; from Jabri et al. 2020): the first frame's ground-truth
masks are propagated frame by frame with the frozen encoder's patch tokens, then scored with the DAVIS
toolkit's J and F (``gensis.eval.metrics.segmentation``).

Notation (DINO code → here)
    f_t            patch tokens of frame t, L2-normalized, (h·w, D)
    context        the first frame and the n previous frames (n = 7), with their label maps y_c (C, h, w)
                   (the first frame's one-hot ground truth; later frames' propagated soft labels)
    A_c[i, j]      exp(<f_t[i], f_c[j]> / τ) · 1[|row_i − row_j| ≤ r and |col_i − col_j| ≤ r]     τ = 0.1, r = 12
    k              for each target patch i only its k = 5 largest A_c[i, j] over all context frames and
                   patches are kept (ties at the k-th value kept, as DINO), normalized to sum 1
    y_t[:, i]      Σ_{c, j} A_c[i, j] y_c[:, j]                                                   (C, h, w)
    output         y_t upsampled ×patch bilinearly, each channel min-max normalized (when its max > 0),
                   argmax, resized to the frame with nearest neighbour, written as a palette PNG

Frame size (DINO ``read_frame``): the short side becomes ``size`` (480) and the long side
``int(size · long/short // 64 · 64)`` (854×480 → 832×480); then both are rounded down to whole patches.
The label map of the first frame is the annotation resized (nearest) to the patch grid.

Scoring as the toolkit's semi-supervised task: per object id (1..N of the first annotation; 255 = void is
background, as the toolkit reads it), J and F per frame over the frames except the first and the last,
statistics per object (mean, recall, decay); the dataset's J&F-Mean is the mean over all objects of J-Mean
and F-Mean, averaged.

Deviation: DINO writes its temperature as the literal 0.1 in ``label_propagation`` (``--temperature``
changes it). The affinity is computed in chunks of target patches with the neighbourhood mask built from
coordinates instead of a dense (h·w)² mask, which gives the same numbers with far less memory.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np

from gensis.errors import UserError

N_LAST_FRAMES = 7
TOPK = 5
RADIUS = 12
TEMPERATURE = 0.1  # DINO's code (``/ 0.1`` in label_propagation)
SIZE = 480


# ---------------------------------------------------------------------------------------------------------
# layout


def davis_layout(root: str | Path, image_set: str = "val", resolution: str = "480p") -> dict:
    """Paths of the DAVIS-2017 layout under ``root``; a UserError naming the first missing file or folder."""
    from gensis.inputs import input_folder

    root = input_folder(root, "DAVIS folder")
    jpeg = root / "JPEGImages" / resolution
    ann = root / "Annotations" / resolution
    lst = root / "ImageSets" / "2017" / f"{image_set}.txt"
    for p in (jpeg, ann, lst):
        if not p.exists():
            raise UserError(f"not a DAVIS-2017 folder: {p} is missing (expected JPEGImages/{resolution}, "
                            f"Annotations/{resolution}, ImageSets/2017/{image_set}.txt)")
    names = [s.strip() for s in lst.read_text().splitlines() if s.strip()]
    if not names:
        raise UserError(f"{lst} lists no sequences")
    return {"root": root, "jpeg": jpeg, "ann": ann, "sequences": names}


def sequence_files(layout: dict, name: str) -> tuple[list[Path], list[Path | None]]:
    """Frame JPEGs in order, and for each its annotation PNG (None where there is none)."""
    fdir, adir = layout["jpeg"] / name, layout["ann"] / name
    if not fdir.is_dir():
        raise UserError(f"sequence '{name}': frame folder {fdir} is missing")
    from gensis.data.sources import image_files

    frames = image_files(fdir)  # sorted; not hidden files (a Mac's ._00000.jpg, which sorted first)
    if not frames:
        raise UserError(f"sequence '{name}': no frames in {fdir}")
    first = adir / f"{frames[0].stem}.png"
    if not first.is_file():
        raise UserError(f"sequence '{name}': first-frame annotation {first} is missing")
    anns = [(adir / f"{f.stem}.png") if (adir / f"{f.stem}.png").is_file() else None for f in frames]
    return frames, anns


def check_sizes(name: str, frames: list[Path], anns: list[Path | None]) -> tuple[int, int] | None:
    """A UserError naming the first frame or annotation of sequence ``name`` whose size differs from its first
    frame's (read from the file headers; the propagation needs one patch grid per sequence, and the DAVIS toolkit
    scores masks of the frame's size). Unreadable files are left to the readers, which name them."""
    from PIL import Image

    def size(path: Path) -> tuple[int, int] | None:
        try:
            with Image.open(path) as im:
                return im.size
        except Exception:
            return None

    first = size(frames[0])
    if first is None:
        return None
    for path in [*frames[1:], *(a for a in anns if a is not None)]:
        other = size(path)
        if other is not None and other != first:
            raise UserError(f"sequence '{name}': {path} is {other[0]}×{other[1]}, its first frame {frames[0].name} "
                            f"{first[0]}×{first[1]}: every frame and annotation of a sequence must have one size")
    return first


def read_annotation(path: Path) -> tuple[np.ndarray, list[int] | None]:
    """(H, W) uint8 object ids of a palette PNG, and its palette (None if the PNG has none)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            palette = im.getpalette() if im.mode == "P" else None
            if im.mode not in ("P", "L"):
                raise UserError(f"{path}: annotations must be palette (or grey) PNGs of object ids, got mode {im.mode}")
            lab = np.array(im, dtype=np.uint8)
            if im.mode == "L" and set(np.unique(lab).tolist()) <= {0, 255}:
                lab = (lab == 255).astype(np.uint8)  # a DAVIS-2016 0/255 mask: one object, id 1
            return lab, palette
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read annotation {path}: {type(e).__name__}: {e}") from None


def check_object_ids(name: str, first: Path) -> None:
    """A UserError when the first-frame annotation of sequence ``name`` does not hold the object ids 1 .. N
    (0 background, 255 void), as DAVIS numbers them: every id up to the largest is scored as an object, and one
    absent from the frames (empty ground truth, empty prediction) scored J = F = 1, raising J&F without a word
    (ids 1 and 3; a grey mask with anti-aliased edges, each grey level an object)."""
    lab, _ = read_annotation(first)
    ids = sorted(set(np.unique(lab).tolist()) - {0, 255})
    if ids and ids != list(range(1, ids[-1] + 1)):
        absent = sorted(set(range(1, ids[-1] + 1)) - set(ids))
        shown = ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
        raise UserError(f"sequence '{name}': its first-frame annotation {first} holds the object ids {shown}, "
                        f"without {absent[0]}: objects are numbered 1 .. N (0 background, 255 void) and each "
                        f"id up to {ids[-1]} would be scored (an absent one as J = F = 1); renumber them")


def read_frame(path: Path) -> np.ndarray:
    from gensis.data.sources import _read_image

    return _read_image(path)


def davis_palette() -> list[int]:
    """The DAVIS / PASCAL VOC colour map (id → RGB by bit interleaving), 256 × 3 values."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def frame_grid(h: int, w: int, size: int, patch: int) -> tuple[int, int]:
    """The (H, W) in pixels a frame of h × w is fed at: ``frame_size``, then down to whole patches (one at least)."""
    th, tw = frame_size(h, w, size)
    return max(patch, th // patch * patch), max(patch, tw // patch * patch)


def frame_size(h: int, w: int, size: int = SIZE) -> tuple[int, int]:
    """DINO ``read_frame``: the short side = size, the long side scaled and rounded down to a multiple of 64."""
    if h > w:
        return int((size * h / w) // 64 * 64), size
    return size, int((size * w / h) // 64 * 64)


# ---------------------------------------------------------------------------------------------------------
# label propagation


def propagate(target, sources, labels, radius: int = RADIUS, topk: int = TOPK, temperature: float = TEMPERATURE,
              chunk: int | None = None):
    """One label-propagation step (DINO ``label_propagation``).

    target (h, w, D) patch tokens; sources (M, h, w, D) of the M context frames; labels (M, C, h, w).
    Returns the target's soft labels (C, h, w).
    """
    import torch
    import torch.nn.functional as F

    h, w, d = target.shape
    m, c = labels.shape[:2]
    n = h * w
    q = F.normalize(target.reshape(n, d), dim=1)  # (N, D)
    keys = F.normalize(sources.reshape(m, n, d), dim=2)  # (M, N, D)
    y = labels.reshape(m, c, n).permute(0, 2, 1).reshape(m * n, c)  # (M·N, C)
    rows = torch.arange(n, device=q.device) // w  # (N,)
    cols = torch.arange(n, device=q.device) % w
    out = torch.empty(n, c, device=q.device)
    if chunk is None:  # target rows per step: ~3e7 affinities (~120 MB) at a time
        chunk = max(16, min(4096, int(3e7 // (m * n))))
    for s in range(0, n, chunk):
        qi = q[s:s + chunk]  # (B, D)
        sim = torch.einsum("bd,mnd->bmn", qi, keys)  # (B, M, N)
        if radius > 0:
            near = ((rows[s:s + chunk, None] - rows[None]).abs() <= radius) & \
                   ((cols[s:s + chunk, None] - cols[None]).abs() <= radius)  # (B, N)
            sim = sim.masked_fill(~near[:, None, :], float("-inf"))
        sim = sim.reshape(len(qi), m * n)  # (B, M·N)
        # exp((sim - row max) / T): DINO's exp(sim / T) up to a per-row factor that the normalization below
        # cancels; exp(sim / T) overflowed float32 for T < 1/88.7 (inf, NaN labels, a wrong J&F without a word)
        aff = torch.exp((sim - sim.max(1, keepdim=True).values) / temperature)
        kth = aff.topk(topk, dim=1).values[:, -1:]  # (B, 1) the k-th largest
        aff = torch.where(aff < kth, torch.zeros_like(aff), aff)
        aff = aff / aff.sum(1, keepdim=True)
        out[s:s + chunk] = aff @ y  # (B, C)
    return out.T.reshape(c, h, w)


def norm_mask(mask):
    """DINO ``norm_mask``: each channel of (C, H, W) min-max normalized when its max is > 0."""
    mask = mask.clone()
    for i in range(mask.shape[0]):
        mc = mask[i]
        if mc.max() > 0:
            mc = mc - mc.min()
            mask[i] = mc / mc.max()
    return mask


def segment_sequence(encoder, frames: list[Path], first_ann: np.ndarray, size: int = SIZE,
                     n_last: int = N_LAST_FRAMES, topk: int = TOPK, radius: int = RADIUS,
                     temperature: float = TEMPERATURE, desc: str = "", bar=None) -> list[np.ndarray]:
    """Predicted (H, W) uint8 object-id maps of every frame (the first is its annotation). ``bar``: a progress
    bar to advance by one per propagated frame (else one of its own over the sequence)."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from gensis.eval.features import FeatureSpec, encode
    from gensis.progress import progress

    ps = encoder.patch_size
    # frames keep their aspect ratio on purpose (dense labels over the whole frame, DINO eval_video_segmentation.py)
    spec = FeatureSpec("patch", resize="none")

    def tokens(path):
        img = read_frame(path)
        oh, ow = img.shape[:2]
        th, tw = frame_grid(oh, ow, size, ps)
        x = torch.from_numpy(img).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
        from gensis.eval.features import _resize

        with torch.no_grad():
            return encode(encoder, _resize(x, (th, tw)), spec)[0].float(), (oh, ow)  # (h, w, D)

    f0, (oh, ow) = tokens(frames[0])
    h, w = f0.shape[:2]
    n_obj = int(first_ann[first_ann != 255].max(initial=0))
    small = np.array(Image.fromarray(np.where(first_ann == 255, 0, first_ann)).resize((w, h), Image.NEAREST))
    y0 = F.one_hot(torch.from_numpy(small.astype(np.int64)), n_obj + 1).permute(2, 0, 1).float()  # (C, h, w)
    y0 = y0.to(f0.device)
    preds = [first_ann.copy()]
    queue: list[tuple] = []
    for path in (frames[1:] if bar is not None else progress(frames[1:], desc=desc or "frames", leave=False)):
        ft, _ = tokens(path)
        ctx = [(f0, y0)] + queue
        soft = propagate(ft, torch.stack([c[0] for c in ctx]), torch.stack([c[1] for c in ctx]),
                         radius, topk, temperature)  # (C, h, w)
        queue.append((ft, soft))
        if len(queue) > n_last:
            queue.pop(0)
        up = F.interpolate(soft[None], scale_factor=ps, mode="bilinear", align_corners=False)[0]  # (C, h·ps, w·ps)
        lab = norm_mask(up).argmax(0).to(torch.uint8).cpu().numpy()
        preds.append(np.array(Image.fromarray(lab).resize((ow, oh), Image.NEAREST)))
        if bar is not None:
            bar.update(1)
    return preds


# ---------------------------------------------------------------------------------------------------------
# scoring and outputs


def score_sequence(preds: list[np.ndarray], anns: list[Path | None], first_ann: np.ndarray) -> list[dict]:
    """Per-object J/F statistics over the annotated frames except the first and the last (toolkit)."""
    from gensis.eval.metrics.segmentation import db_eval_boundary, db_eval_iou, db_statistics

    n_obj = int(first_ann[first_ann != 255].max(initial=0))
    idx = [i for i in range(1, len(preds) - 1) if anns[i] is not None]
    if not idx or n_obj == 0:
        return []
    gt = np.stack([read_annotation(anns[i])[0] for i in idx])  # (T, H, W)
    pr = np.stack([preds[i] for i in idx])
    if gt.shape != pr.shape:
        raise UserError(f"annotation size {gt.shape[1:]} differs from the frames' {pr.shape[1:]}")
    gt = np.where(gt == 255, 0, gt)
    out = []
    for o in range(1, n_obj + 1):
        J = np.atleast_1d(db_eval_iou(gt == o, pr == o))
        Fm = np.atleast_1d(db_eval_boundary(gt == o, pr == o))
        jm, jr, jd = db_statistics(J)
        fm, fr, fd = db_statistics(Fm)
        out.append({"object": o, "J": {"mean": jm, "recall": jr, "decay": jd},
                    "F": {"mean": fm, "recall": fr, "decay": fd}, "frames": len(idx)})
    return out


def write_palette_png(path: Path, labels: np.ndarray, palette: list[int]) -> None:
    from PIL import Image

    from gensis.rundir import atomic_write_bytes

    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(palette)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def overlay_strip(frames: list[Path], preds: list[np.ndarray], anns: list[Path | None], palette: list[int],
                  n: int = 5, height: int = 200) -> bytes:
    """PNG bytes: n frames evenly spaced; top row the prediction over the frame, bottom row the ground truth."""
    from PIL import Image

    pal = np.array(palette[:768] + [0] * (768 - len(palette[:768])), np.uint8).reshape(256, 3)
    picks = sorted(set(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int).tolist()))
    rows = [[], []]
    for i in picks:
        img = read_frame(frames[i]).astype(np.float32)
        for r, lab in enumerate((preds[i], read_annotation(anns[i])[0] if anns[i] is not None else None)):
            if lab is None:
                tile = img * 0.3
            else:
                colour = pal[lab].astype(np.float32)
                on = (lab > 0)[..., None]
                tile = np.where(on, 0.45 * img + 0.55 * colour, img)
            t = Image.fromarray(tile.clip(0, 255).astype(np.uint8))
            t = t.resize((max(1, round(t.width * height / t.height)), height), Image.BILINEAR)
            rows[r].append(np.asarray(t))
    strip = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG")
    return buf.getvalue()


def check_out(out: str | Path, root: str | Path) -> None:
    """A UserError, before any work, when ``--out`` would overwrite files that are not predictions of an earlier
    ``gensis eval davis``: a folder inside the DAVIS folder (``Annotations/480p`` holds the ground truth under the
    same names), or a non-empty folder of other files. Nothing is written."""
    from gensis.eval.options import check_output_folder
    from gensis.folder_kind import require_own_or_empty

    check_output_folder(out, "--out")
    o, r = Path(out).expanduser().resolve(), Path(root).expanduser().resolve()
    if o == r or r in o.parents:
        raise UserError(f"--out {out} lies inside the DAVIS folder {root}: the predictions would overwrite its "
                        f"files (Annotations/ holds the ground truth under the same names); give a folder outside it")
    require_own_or_empty(out, "davis-predictions", again="to write into it again")


def start_out(out: str | Path, root: str | Path, image_set: str) -> None:
    """The marker of a predictions folder (``folder_kind.DAVIS_MARKER``), written before any prediction; the
    temporary files a killed run left there are removed."""
    from gensis.folder_kind import DAVIS_FORMAT, DAVIS_MARKER
    from gensis.rundir import atomic_write_json, remove_stale_temps

    out = Path(out).expanduser()
    atomic_write_json(out / DAVIS_MARKER, {"format": DAVIS_FORMAT, "data": str(root), "image_set": image_set})
    for folder in [out, *(d for d in out.iterdir() if d.is_dir())]:  # what a killed run was writing
        remove_stale_temps(folder)


def davis_eval(encoder, root: str | Path, out: str | Path | None = None, sequences: list[str] | None = None,
               image_set: str = "val", size: int = SIZE, n_last: int = N_LAST_FRAMES, topk: int = TOPK,
               radius: int = RADIUS, temperature: float = TEMPERATURE, strip_frames: int = 5) -> dict:
    """Label propagation over the DAVIS sequences of ``image_set``; J&F like the toolkit (see module doc).

    With ``out``, writes ``out/<sequence>/<frame>.png`` (palette PNGs) and ``out/<sequence>-overlay.png``.
    """
    from gensis.eval.common import describe_encoder
    from gensis.rundir import atomic_write_bytes

    for name, v, lo in (("--n-last-frames", n_last, 0), ("--topk", topk, 1), ("--radius", radius, 0),
                        ("--size", size, 1)):
        if v < lo:
            raise UserError(f"{name} must be >= {lo}, got {v}")
    if not temperature > 0:
        raise UserError(f"--temperature must be > 0, got {temperature}")
    layout = davis_layout(root, image_set)
    names = layout["sequences"]
    if sequences:
        unknown = [s for s in sequences if s not in names]
        if unknown:
            raise UserError(f"sequence '{unknown[0]}' is not in {image_set}.txt ({', '.join(names[:8])})")
        names = sequences
    files = {s: sequence_files(layout, s) for s in names}  # every layout error before any work
    for s, (frames, anns) in files.items():
        check_object_ids(s, anns[0])
        first_size = check_sizes(s, frames, anns)
        if first_size is not None:  # DINO's top-k over the first frame's patches needs k of them
            th, tw = frame_grid(first_size[1], first_size[0], size, encoder.patch_size)
            gh, gw = th // encoder.patch_size, tw // encoder.patch_size
            if gh * gw < topk:
                raise UserError(f"--size {size} makes the frames of '{s}' {gh}×{gw} = {gh * gw} patches of "
                                f"{encoder.patch_size} px, fewer than --topk {topk}: use a larger --size (or a "
                                f"smaller --topk)")
    out_dir = None if out is None else Path(out).expanduser()
    if out_dir is not None:
        check_out(out_dir, layout["root"])
        start_out(out_dir, layout["root"], image_set)
    from gensis.progress import progress

    t0 = time.time()
    per_seq, objects = [], []
    # one bar over every frame of every sequence: the ETA is the whole evaluation's (30 sequences at 480 px on a CPU)
    bar = progress(total=sum(len(files[s][0]) - 1 for s in names), desc="DAVIS frames", leave=False)
    for s in names:
        frames, anns = files[s]
        first, palette = read_annotation(anns[0])
        palette = palette or davis_palette()
        bar.set_postfix_str(s)
        preds = segment_sequence(encoder, frames, first, size, n_last, topk, radius, temperature, desc=s, bar=bar)
        scores = score_sequence(preds, anns, first)
        if out_dir is not None:
            od = out_dir / s
            for f, p in zip(frames, preds):
                write_palette_png(od / f"{f.stem}.png", p, palette)
            atomic_write_bytes(out_dir / f"{s}-overlay.png", overlay_strip(frames, preds, anns, palette, strip_frames))
        row = {"sequence": s, "frames": len(frames), "objects": len(scores)}
        if scores:
            row["J"] = float(np.mean([o["J"]["mean"] for o in scores]))
            row["F"] = float(np.mean([o["F"]["mean"] for o in scores]))
            row["JF"] = (row["J"] + row["F"]) / 2
        row["per_object"] = scores
        per_seq.append(row)
        objects += scores
    bar.close()
    res = {"protocol": "davis", "encoder": describe_encoder(encoder), "data": str(layout["root"]),
           "image_set": image_set,
           "config": {"size": size, "n_last_frames": n_last, "topk": topk, "radius": radius,
                      "temperature": temperature, "patch_size": encoder.patch_size},
           "sequences": per_seq, "out": None if out is None else str(out)}
    if objects:
        stat = {m: {k: float(np.mean([o[m][k] for o in objects])) for k in ("mean", "recall", "decay")}
                for m in ("J", "F")}
        res.update({"J": stat["J"], "F": stat["F"], "JF": (stat["J"]["mean"] + stat["F"]["mean"]) / 2})
    else:
        res["JF"] = None
    res["seconds"] = round(time.time() - t0, 1)
    return res


# ---------------------------------------------------------------------------------------------------------
# command line: gensis eval davis


def _add_arguments(p) -> None:
    from gensis.eval.options import add_encoder_options, add_runtime_options

    add_encoder_options(p, data_option=None)
    p.add_argument("--data", required=True, metavar="DAVIS_ROOT",
                   help="DAVIS-2017 folder: JPEGImages/480p/<seq>/*.jpg, Annotations/480p/<seq>/*.png, "
                        "ImageSets/2017/<set>.txt")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write the predicted palette PNGs (DIR/<seq>/*.png) and overlay strips (DIR/<seq>-overlay.png)")
    p.add_argument("--set", default="val", metavar="NAME", help="which ImageSets/2017/NAME.txt lists the sequences")
    p.add_argument("--sequences", default=None, metavar="A,B", help="only these sequences of the set")
    p.add_argument("--size", type=int, default=SIZE, metavar="PX",
                   help="short side of the frames fed to the encoder (DINO: 480)")
    p.add_argument("--n-last-frames", type=int, default=N_LAST_FRAMES, metavar="N", help="previous frames used as context")
    p.add_argument("--topk", type=int, default=TOPK, metavar="K", help="nearest source patches kept per target patch")
    p.add_argument("--radius", type=int, default=RADIUS, metavar="R",
                   help="neighbourhood (in patches) a source patch must lie in; 0: everywhere")
    p.add_argument("--temperature", type=float, default=TEMPERATURE, metavar="T",
                   help="affinity exp(cos/T) (DINO's code: 0.1)")
    p.add_argument("--strip-frames", type=int, default=5, metavar="N", help="frames in each overlay strip")
    add_runtime_options(p)


def _run(args) -> dict:
    from gensis.eval.options import open_encoder, setup_runtime

    device = setup_runtime(args)
    davis_layout(args.data, args.set)  # layout errors before loading the encoder
    if args.out is not None:
        check_out(args.out, args.data)
    enc = open_encoder(args.encoder, args, device=device)
    seqs = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
    return davis_eval(enc, args.data, args.out, seqs, args.set, args.size, args.n_last_frames, args.topk,
                      args.radius, args.temperature, args.strip_frames)


def format_davis(res: dict) -> str:
    e, c = res["encoder"], res["config"]
    lines = [f"DAVIS label propagation  encoder: {e['name']} ({e['identity']}, patch {c['patch_size']})",
             f"data: {res['data']} ({res['image_set']}), size {c['size']}, n={c['n_last_frames']}, "
             f"top-k {c['topk']}, radius {c['radius']}, T={c['temperature']:g}",
             f"{'sequence':<20} {'frames':>6} {'obj':>4} {'J&F':>6} {'J':>6} {'F':>6}"]
    for r in res["sequences"]:
        if "JF" in r:
            lines.append(f"{r['sequence']:<20} {r['frames']:>6} {r['objects']:>4} {100 * r['JF']:6.1f} "
                         f"{100 * r['J']:6.1f} {100 * r['F']:6.1f}")
        else:
            lines.append(f"{r['sequence']:<20} {r['frames']:>6} {'-':>4} {'(no annotations to score)':>20}")
    if res.get("JF") is not None:
        J, F = res["J"], res["F"]
        lines.append(f"{'all (mean over objects)':<25} J&F-Mean {100 * res['JF']:.1f}  "
                     f"J: mean {100 * J['mean']:.1f} recall {100 * J['recall']:.1f} decay {100 * J['decay']:.1f}  "
                     f"F: mean {100 * F['mean']:.1f} recall {100 * F['recall']:.1f} decay {100 * F['decay']:.1f}")
    if res.get("out"):
        lines.append(f"predicted masks and overlay strips in {res['out']}")
    return "\n".join(lines)


from gensis.eval.registry import Evaluation  # noqa: E402

EVALUATION = Evaluation(
    name="davis",
    summary="DAVIS-2017 video object segmentation by label propagation of patch features (DINO); J&F",
    description="Propagates the first frame's masks with the frozen patch tokens (DINO: first frame + 7 previous, "
                "top-5 neighbours within 12 patches), writes palette PNGs and overlay strips, and scores J and F "
                "as the DAVIS-2017 toolkit (semi-supervised).",
    add_arguments=_add_arguments, run=_run, format=format_davis,
    headline=lambda r: [("DAVIS J&F-Mean", 100 * r["JF"])] if r.get("JF") is not None else [],
    data_options=("data",),
)
