"""Image retrieval on revisited Oxford and Paris (Radenović et al., CVPR 2018), as DINO ``eval_image_retrieval.py``.

Protocol: every database image and every query (cropped to its bounding box, as the revisited benchmark
defines queries) is described by the frozen encoder's CLS token, images resized with their aspect ratio kept
so that the longest side is ``--imsize`` (DINO: 224; PIL ``thumbnail``), optionally averaged over the scales
1, 1/√2, 1/2 (``--multiscale``, DINO ``multi_scale``), then L2-normalized. Similarity is the dot product;
each query ranks the database by decreasing similarity (``ranks`` (db, nq) = argsort(−sim), DINO). mAP and
mP@k (k = 1, 5, 10) for Easy, Medium and Hard with revisitop's ``compute_map``, junk images ignored as the
benchmark defines them (``gensis.eval.metrics.retrieval``).

Layout read (as distributed by revisitop): ``ROOT/<dataset>/gnd_<dataset>.pkl`` (``imlist``, ``qimlist``,
``gnd`` with ``bbx``/``easy``/``hard``/``junk``) and ``ROOT/<dataset>/jpg/<name>.jpg``; ROOT may also be the
dataset folder itself. The ground-truth pickle is read with a restricted unpickler that admits only plain
containers and numpy arrays (never ``pickle.load``).

Deviations from DINO's script: queries are cropped to their boxes (revisitop's definition; DINO's script
describes whole query images); PIL's removed ``Image.ANTIALIAS`` is replaced by antialiased resizing.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from gensis.data.sources import ImageSet, _read_image
from gensis.errors import UserError

DATASETS = ("roxford5k", "rparis6k")
KAPPAS = (1, 5, 10)


class ImageListSet(ImageSet):
    """Images given by path, each optionally cropped to a box (x0, y0, x1, y1)."""

    def __init__(self, paths: list[Path], boxes: list | None = None, name: str = "images"):
        self.paths, self.boxes, self.name = paths, boxes, name
        self.labels = self.groups = self.classes = None
        self._identity: str | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int) -> np.ndarray:
        img = _read_image(self.paths[i])
        if self.boxes is not None and self.boxes[i] is not None:
            x0, y0, x1, y1 = (float(v) for v in self.boxes[i])
            h, w = img.shape[:2]
            # PIL Image.crop(bbx) semantics with rounding to whole pixels, clipped to the image
            x0, y0 = max(0, int(round(x0))), max(0, int(round(y0)))
            x1, y1 = min(w, int(round(x1))), min(h, int(round(y1)))
            if x1 > x0 and y1 > y0:
                img = np.ascontiguousarray(img[y0:y1, x0:x1])
        return img

    @property
    def identity(self) -> str:
        if self._identity is None:
            h = hashlib.sha256()
            for i, p in enumerate(self.paths):
                st = p.stat()
                box = None if self.boxes is None else self.boxes[i]
                h.update(f"{p.name}|{st.st_size}|{None if box is None else [round(float(v), 2) for v in box]}\n".encode("utf-8", "surrogateescape"))
            self._identity = h.hexdigest()[:16]
        return self._identity


def read_gnd(path: Path) -> dict:
    """The revisitop ground truth, read with the restricted unpickler; UserError on anything else."""
    import pickle

    from gensis.data.restricted_pickle import load_numpy_pickle

    try:
        cfg = load_numpy_pickle(path.read_bytes(), encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not isinstance(cfg, dict) or not all(k in cfg for k in ("imlist", "qimlist", "gnd")):
        raise UserError(f"{path}: expected a dict with imlist, qimlist and gnd")
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise UserError(f"{path}: {len(cfg['gnd'])} gnd entries for {len(cfg['qimlist'])} queries")
    check_gnd(path, cfg)
    return cfg


def check_gnd(path: Path, cfg: dict) -> None:
    """A UserError naming the first query whose ground truth is malformed: not a dict, a bbx that is no
    non-empty box (it described the whole query image), an easy/hard/junk entry that is no list of whole
    numbers, or an index outside the database (0 .. len(imlist) - 1). Such an index
    matched no database image: a positive counted as never retrieved, a lower mAP without a word (1-based
    indices, a list made for another database)."""
    n_db = len(cfg["imlist"])
    for q, g in enumerate(cfg["gnd"]):
        where = f"{path}: gnd[{q}] (query {cfg['qimlist'][q]})"
        if not isinstance(g, dict):
            raise UserError(f"{where} is a {type(g).__name__}, not a dict with easy, hard and junk")
        for key in ("easy", "hard", "junk"):
            try:
                ids = np.asarray(g.get(key, []), dtype=np.float64).ravel()
            except (TypeError, ValueError):
                raise UserError(f"{where}: '{key}' is not a list of database indices") from None
            bad = ids[(ids != np.round(ids)) | (ids < 0) | (ids >= n_db)]
            if len(bad):
                raise UserError(f"{where}: '{key}' holds {bad[0]:g}, not an index of the {n_db} database images "
                                f"(0 .. {n_db - 1}, 0-based into imlist)")
        box = g.get("bbx")
        if box is not None:
            try:
                x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).ravel())
            except (TypeError, ValueError):
                raise UserError(f"{where}: 'bbx' is not 4 numbers x0, y0, x1, y1") from None
            if not (x1 > x0 and y1 > y0):  # an empty box described the whole image without a word
                raise UserError(f"{where}: 'bbx' {[x0, y0, x1, y1]} is empty (x1 <= x0 or y1 <= y0); boxes are "
                                f"x0, y0, x1, y1 in pixels")


def retrieval_layout(root: str | Path, dataset: str) -> dict:
    """gnd and image paths of ``dataset`` under ``root``; a UserError naming the first missing file."""
    if dataset not in DATASETS:
        raise UserError(f"unknown --dataset '{dataset}'; one of {', '.join(DATASETS)}")
    from gensis.inputs import input_folder

    root = input_folder(root, "retrieval data folder")
    base = root if (root / f"gnd_{dataset}.pkl").is_file() else root / dataset
    gnd_path = base / f"gnd_{dataset}.pkl"
    if not gnd_path.is_file():
        raise UserError(f"ground truth not found: {gnd_path} (expected ROOT/{dataset}/gnd_{dataset}.pkl and jpg/)")
    jpg = base / "jpg"
    if not jpg.is_dir():
        raise UserError(f"image folder not found: {jpg}")
    cfg = read_gnd(gnd_path)
    for name in list(cfg["imlist"]) + list(cfg["qimlist"]):
        if not (jpg / f"{name}.jpg").is_file():
            raise UserError(f"image not found: {jpg / f'{name}.jpg'}")
    return {"base": base, "jpg": jpg, "cfg": cfg}


def ranks_from_features(db: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(db, nq) database indices by decreasing cosine similarity (DINO: argsort(−sim, axis=0))."""
    from gensis.eval.knn import l2_normalize

    sim = l2_normalize(db) @ l2_normalize(queries).T  # (db, nq)
    return np.argsort(-sim, axis=0, kind="stable")


def retrieval_eval(encoder, root: str | Path, dataset: str, imsize: int = 224, multiscale: bool = False,
                   batch_size: int = 32, cache=None) -> dict:
    from gensis.eval.common import describe_encoder
    from gensis.eval.features import MULTISCALE, FeatureSpec, dataset_features
    from gensis.eval.metrics.retrieval import PROTOCOLS, compute_map, revisited_gnd

    if imsize < 1:
        raise UserError(f"--imsize must be >= 1, got {imsize}")
    lay = retrieval_layout(root, dataset)
    cfg, jpg = lay["cfg"], lay["jpg"]
    t0 = time.time()
    # aspect ratio kept on purpose (longest side = imsize, DINO eval_image_retrieval.py), not the centre crop of k-NN
    spec = FeatureSpec("cls", size=imsize, resize="max", scales=MULTISCALE if multiscale else (1.0,))
    db = ImageListSet([jpg / f"{n}.jpg" for n in cfg["imlist"]], name=f"{dataset}-db")
    boxes = [g.get("bbx") if isinstance(g, dict) else None for g in cfg["gnd"]]
    qs = ImageListSet([jpg / f"{n}.jpg" for n in cfg["qimlist"]], boxes, name=f"{dataset}-queries")
    f_db = dataset_features(encoder, db, spec, batch_size, cache, desc="database features")
    f_q = dataset_features(encoder, qs, spec, batch_size, cache, desc="query features")
    ranks = ranks_from_features(f_db, f_q)
    results = {}
    for protocol in PROTOCOLS:
        m, aps, mpk, _ = compute_map(ranks, revisited_gnd(cfg["gnd"], protocol), KAPPAS)
        scored = int(np.sum(~np.isnan(aps)))
        # no query with positives: no number (None; revisitop's NaN), not a score of 0 or 100
        results[protocol] = {"mAP": 100 * float(m) if scored else None,
                             "mP@k": {str(k): 100 * float(v) if scored else None for k, v in zip(KAPPAS, mpk)},
                             "queries_scored": scored}
    return {"protocol": "retrieval", "dataset": dataset, "encoder": describe_encoder(encoder),
            "data": str(lay["base"]), "database": len(db), "queries": len(qs),
            "config": {"imsize": imsize, "multiscale": multiscale, "feature": "cls", "query_crop": "bbx"},
            "results": results, "seconds": round(time.time() - t0, 1)}


# ---------------------------------------------------------------------------------------------------------
# command line: gensis eval retrieval


def _add_arguments(p) -> None:
    from gensis.eval.options import add_encoder_options, add_runtime_options

    add_encoder_options(p, data_option=None)
    p.add_argument("--data", required=True, metavar="ROOT",
                   help="folder holding <dataset>/gnd_<dataset>.pkl and <dataset>/jpg/ (revisitop's layout)")
    p.add_argument("--dataset", required=True, choices=DATASETS, help="which revisited benchmark")
    p.add_argument("--imsize", type=int, default=224, metavar="PX",
                   help="longest image side fed to the encoder, aspect kept (DINO default 224)")
    p.add_argument("--multiscale", action="store_true", help="average the descriptor over scales 1, 1/√2, 1/2 (DINO)")
    add_runtime_options(p)


def _run(args) -> dict:
    from gensis.eval.options import feature_cache, open_encoder, setup_runtime

    device = setup_runtime(args)
    retrieval_layout(args.data, args.dataset)  # layout errors before loading the encoder
    enc = open_encoder(args.encoder, args, device=device)
    return retrieval_eval(enc, args.data, args.dataset, args.imsize, args.multiscale,
                          args.feature_batch_size, feature_cache(args))


def format_retrieval(res: dict) -> str:
    e, c = res["encoder"], res["config"]
    lines = [f"retrieval {res['dataset']}  encoder: {e['name']} ({e['identity']})",
             f"{res['database']} database images, {res['queries']} queries (cropped to their boxes), imsize "
             f"{c['imsize']}{', multi-scale' if c['multiscale'] else ''}",
             f"{'protocol':<8} {'mAP':>6} {'mP@1':>6} {'mP@5':>6} {'mP@10':>6} {'queries':>8}"]
    def num(v) -> str:
        return f"{'-':>6}" if v is None or v != v else f"{v:6.2f}"

    for p, r in res["results"].items():
        mpk = r["mP@k"]
        lines.append(f"{p:<8} {num(r['mAP'])} {num(mpk['1'])} {num(mpk['5'])} {num(mpk['10'])} {r['queries_scored']:>8}")
    empty = [p for p, r in res["results"].items() if not r["queries_scored"]]
    if empty:
        lines.append(f"{', '.join(empty)}: no query has positives in this protocol, so no mAP (-)")
    return "\n".join(lines)


from gensis.eval.registry import Evaluation  # noqa: E402

EVALUATION = Evaluation(
    name="retrieval",
    summary="revisited Oxford/Paris image retrieval: mAP and mP@k, Easy/Medium/Hard (revisitop, DINO)",
    description="Describes database images and box-cropped queries by the CLS token (longest side --imsize, "
                "optional multi-scale), ranks by cosine similarity, and scores with revisitop's compute_map.",
    add_arguments=_add_arguments, run=_run, format=format_retrieval,
    headline=lambda r: [(f"{r['dataset']} mAP {p.capitalize()}", r["results"][p]["mAP"]) for p in ("medium", "hard")
                        if r["results"][p]["mAP"] is not None],
    data_options=("data", "dataset"),
)
