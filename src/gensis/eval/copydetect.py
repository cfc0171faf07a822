"""Copy detection on INRIA Copydays, as DINO ``eval_copy_detection.py`` (Gen-SIS supplementary Sec. 9.5.5).

Descriptor: [CLS ⊕ GeM_{p=4}(patch tokens)] of the image resized to 320 × 320 (768-d for ViT-S). Optional
whitening (``--whiten DIR``): the mean of the DIR images' descriptors is subtracted from all descriptors,
then PCA whitening with exponent 0.5 learned on DIR (DINO ``utils.PCA``: eigenvalues floored at
max · 1e-5, x ↦ diag(d^-0.5) Vᵀ x). Optional distractors (``--distractors DIR``) join the database. All
descriptors are L2-normalized; the similarity is cosine; each query keeps its 20 best database images and
its AP is computed on that list (``score_ap_from_ranks_1``, the trapezoid rule). mAP is reported per
block of queries: ``strong`` (the paper's number), and when present ``jpegqual/<q>`` and ``crops/<p>``.

Layout read (Copydays as distributed): ``ROOT/original/*.jpg`` (the database), ``ROOT/strong/*.jpg``, and
optionally ``ROOT/jpegqual/<q>/*.jpg`` and ``ROOT/crops/<p>/*.jpg``. A query's positives are the originals
whose file names share its first 4 characters (DINO's rule for ``strong``; for the other blocks DINO maps
the i-th query to the i-th original, which is the same file name and so the same prefix).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gensis.errors import UserError

IMSIZE = 320
TOPK = 20
PREFIX = 4


def _jpgs(folder: Path) -> list[Path]:
    """The images of ``folder`` as every gensis data folder lists them (not hidden ones: a Mac's ``._x.jpg``)."""
    from gensis.data.sources import image_files

    return image_files(folder)


def copydays_layout(root: str | Path) -> dict:
    """Blocks of Copydays under ``root``: {"original": [...], "strong": [...], "jpegqual/50": [...], ...}."""
    from gensis.inputs import input_folder

    root = input_folder(root, "Copydays folder")
    blocks = {}
    for need in ("original", "strong"):
        d = root / need
        if not d.is_dir():
            raise UserError(f"not a Copydays folder: {d} is missing (expected original/ and strong/)")
        blocks[need] = _jpgs(d)
        if not blocks[need]:
            raise UserError(f"no images in {d}")
    for group in ("jpegqual", "crops"):
        g = root / group
        if g.is_dir():
            subs = sorted((d for d in g.iterdir() if d.is_dir()), key=lambda d: (len(d.name), d.name))
            for d in subs:
                files = _jpgs(d)
                if files:
                    blocks[f"{group}/{d.name}"] = files
    return {"root": root, "blocks": blocks}


class PCAWhitening:
    """DINO ``utils.PCA(dim, whit=0.5)``: trained on a covariance matrix, applied as x ↦ dmul · x."""

    def __init__(self, dim: int, whit: float = 0.5):
        self.dim, self.whit = dim, whit

    def train(self, cov: np.ndarray) -> "PCAWhitening":
        d, v = np.linalg.eigh(cov)
        eps = d.max() * 1e-5
        d = np.where(d < eps, eps, d)
        self.energy = float(d[np.argsort(d)[::-1][:self.dim]].sum() / d.sum())
        idx = np.argsort(d)[::-1][:self.dim]
        d, v = d[idx], v[:, idx]
        self.dmul = np.diag(1.0 / d ** self.whit) @ v.T  # (dim, D)
        return self

    def apply(self, x: np.ndarray) -> np.ndarray:
        return (self.dmul @ x.T).T


def descriptor_name(encoder) -> str:
    """What the descriptor is for this encoder: a ViT's CLS ⊕ GeM of its patch tokens; for raw pixels the
    flattened image ⊕ GeM of its pixel patches (no CLS token exists)."""
    if encoder.model is None:
        ps = encoder.patch_size
        return f"raw pixels ⊕ GeM(p=4) of {ps}×{ps}-px patches"
    return "CLS ⊕ GeM(p=4)"


def _ap_per_query(indices: np.ndarray, positives: list[list[int]]) -> np.ndarray:
    from gensis.eval.metrics.retrieval import score_ap_from_ranks_1

    out = np.zeros(len(indices))
    for q, row in enumerate(indices):
        pos = set(positives[q])
        ranks = [r for r, b in enumerate(row) if int(b) in pos]
        out[q] = score_ap_from_ranks_1(ranks, len(positives[q])) if positives[q] else np.nan
    return out


def check_distractors(layout: dict, files: list[Path], option: str | Path | None) -> None:
    """A UserError when ``--distractors`` holds images of the Copydays folder itself (its original/, strong/ or
    another block: the same files): an original would be in the database twice, the second copy a non-positive,
    or a query would find itself, and the mAP would drop without a word."""
    import os

    own = {os.path.realpath(p): block for block, paths in layout["blocks"].items() for p in paths}
    shared = [f for f in files if os.path.realpath(f) in own]
    if shared:
        raise UserError(f"--distractors {option}: {len(shared)} of its {len(files)} images are Copydays' own (e.g. "
                        f"{shared[0].name} of {own[os.path.realpath(shared[0])]}/): a query or its original would "
                        f"also be a distractor; name a folder of other images")


def copydetect_eval(encoder, root: str | Path, distractors: str | Path | None = None,
                    whiten: str | Path | None = None, imsize: int = IMSIZE, batch_size: int = 32,
                    cache=None) -> dict:
    import torch

    from gensis.eval.common import describe_encoder
    from gensis.eval.features import FeatureSpec, dataset_features
    from gensis.eval.knn import l2_normalize
    from gensis.eval.retrieval import ImageListSet

    lay = copydays_layout(root)
    extra = {}
    for opt, d in (("--distractors", distractors), ("--whiten", whiten)):
        if d is not None:
            dp = Path(d).expanduser()
            if not dp.is_dir():
                raise UserError(f"{opt} folder not found: {dp}")
            files = _jpgs(dp)
            if not files:
                raise UserError(f"{opt}: no images in {dp}")
            extra[opt] = files
    if "--distractors" in extra:
        check_distractors(lay, extra["--distractors"], distractors)
    t0 = time.time()
    # stretched to imsize × imsize on purpose: DINO eval_copy_detection.py Resize((imsize, imsize)); not the
    # short-side + centre crop of k-NN/linear (a copy may sit anywhere in the image)
    spec = FeatureSpec("cls_gem", size=imsize, resize="square")

    def feats(files, name):
        return dataset_features(encoder, ImageListSet(files, name=name), spec, batch_size, cache,
                                desc=f"{name} features").astype(np.float64)

    blocks = lay["blocks"]
    originals = blocks["original"]
    database = [feats(originals, "original")]
    if "--distractors" in extra:
        database.append(feats(extra["--distractors"], "distractors"))
    db = np.concatenate(database)
    queries = {name: feats(files, name.replace("/", "-")) for name, files in blocks.items()}
    whitening = None
    if "--whiten" in extra:
        fw = feats(extra["--whiten"], "whitening")
        if len(fw) <= fw.shape[1]:  # a covariance of rank < D: the floored eigenvalues blow noise up
            from gensis.eval.options import warn

            warn(f"--whiten {whiten}: {len(fw)} images for {fw.shape[1]}-d descriptors; PCA whitening needs more "
                 f"images than dimensions (DINO: 20,000), or most directions it scales up are noise")
        mean = fw.mean(0)
        pca = PCAWhitening(db.shape[1]).train(fw.T @ fw / len(fw))  # DINO: covariance of the raw features
        db = pca.apply(db - mean)
        queries = {k: pca.apply(v - mean) for k, v in queries.items()}
        whitening = {"images": len(fw), "energy_kept": pca.energy}
    db = torch.from_numpy(l2_normalize(db))
    orig_prefix = [p.name[:PREFIX] for p in originals]
    results = {}
    for name, q in queries.items():
        qn = torch.from_numpy(l2_normalize(q))
        k = min(TOPK, len(db))
        idx = (qn @ db.T).topk(k, dim=1, largest=True, sorted=True).indices.numpy()  # (nq, k)
        positives = [[j for j, pre in enumerate(orig_prefix) if pre == f.name[:PREFIX]] for f in blocks[name]]
        aps = _ap_per_query(idx, positives)
        results[name] = {"mAP": 100 * float(np.nanmean(aps)) if np.isfinite(aps).any() else None,
                         "queries": len(aps), "without_original": int(np.isnan(aps).sum())}
    return {"protocol": "copydetect", "encoder": describe_encoder(encoder), "data": str(lay["root"]),
            "database": {"originals": len(originals),
                         "distractors": len(extra.get("--distractors", []))},
            "config": {"imsize": imsize, "descriptor": descriptor_name(encoder), "topk": TOPK, "whitening": whitening},
            "results": results, "mAP_strong": results["strong"]["mAP"], "seconds": round(time.time() - t0, 1)}


# ---------------------------------------------------------------------------------------------------------
# command line: gensis eval copydetect


def _add_arguments(p) -> None:
    from gensis.eval.options import add_encoder_options, add_runtime_options

    add_encoder_options(p, data_option=None)
    p.add_argument("--data", required=True, metavar="COPYDAYS_ROOT",
                   help="Copydays folder: original/, strong/ (and optionally jpegqual/<q>/, crops/<p>/)")
    p.add_argument("--distractors", default=None, metavar="DIR", help="images added to the database")
    p.add_argument("--whiten", default=None, metavar="DIR", help="images to learn PCA whitening on (DINO: 20k YFCC)")
    p.add_argument("--imsize", type=int, default=IMSIZE, metavar="PX", help="images resized to PX × PX (DINO: 320)")
    add_runtime_options(p)


def _run(args) -> dict:
    from gensis.eval.options import feature_cache, open_encoder, setup_runtime

    device = setup_runtime(args)
    copydays_layout(args.data)
    enc = open_encoder(args.encoder, args, device=device)
    return copydetect_eval(enc, args.data, args.distractors, args.whiten, args.imsize, args.feature_batch_size,
                           feature_cache(args))


def format_copydetect(res: dict) -> str:
    e, db, c = res["encoder"], res["database"], res["config"]
    w = c["whitening"]
    lines = [f"copy detection (Copydays)  encoder: {e['name']} ({e['identity']})",
             f"database: {db['originals']} originals + {db['distractors']} distractors; {c['descriptor']} at "
             f"{c['imsize']} px; whitening: {'%d images' % w['images'] if w else 'none'}",
             f"{'queries':<16} {'n':>5} {'mAP':>7}"]
    for name, r in res["results"].items():
        m = "-" if r["mAP"] is None else f"{r['mAP']:7.2f}"
        lines.append(f"{name:<16} {r['queries']:>5} {m:>7}" + ("  (the database's own images: each finds itself)"
                                                               if name == "original" else ""))
    for name, r in res["results"].items():
        if r.get("without_original"):  # left out of the mean (DINO's script would count them as AP 0)
            lines.append(f"{name}: {r['without_original']} of {r['queries']} queries have no original sharing their "
                         f"first {PREFIX} characters (Copydays' naming): left out of its mAP; check the file names")
    return "\n".join(lines)


from gensis.eval.registry import Evaluation  # noqa: E402

EVALUATION = Evaluation(
    name="copydetect",
    summary="Copydays copy detection: CLS ⊕ GeM at 320 px, cosine, mAP on 'strong' (DINO)",
    description="DINO's copy-detection protocol on the Copydays layout (original/ is the database, strong/ and "
                "optional jpegqual/*, crops/* are queries); optional distractors and PCA whitening.",
    add_arguments=_add_arguments, run=_run, format=format_copydetect,
    headline=lambda r: [("Copydays strong mAP", r["mAP_strong"])] if r.get("mAP_strong") is not None else [],
    data_options=("data",),
)
