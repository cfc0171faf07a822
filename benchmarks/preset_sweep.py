"""Pretraining-preset sweep on colour images: DINO's k-NN on a validation split after every epoch.

    python benchmarks/preset_sweep.py data                     # writes the CIFAR dev / final files (below)
    python benchmarks/preset_sweep.py baselines --data SPEC    # random-init ViT and raw pixels, @train → @val
    python benchmarks/preset_sweep.py run [--data SPEC] [--preset demo] NAME [key=value ...]
    python benchmarks/preset_sweep.py tiles --slide ../shared/data/wsi/cmu-1-small-region.svs
    python benchmarks/preset_sweep.py tile-proxy RUN random pixels   # histology proxy (see make_tiles)

`data` splits ../shared/data/cifar10-train-10k.npz (1,000 images per class, stored sorted by class)
per class with a fixed seed into a development file (800 per class, 8,000 images) and a final held-out
file (200 per class, 2,000 images), both under --dir (default /tmp/gensis-sweep). Every setting is tuned
on the development file only, through its deterministic stratified split (`@train` 6,400 / `@val` 1,600,
`data.val_fraction` 0.2, `data.split_seed` 0, as `gensis pretrain` and `gensis eval knn` do); the final
file is read once, for the chosen preset, with `gensis eval knn`.

`run` trains `gensis pretrain` on SPEC@train with the preset and overrides (into --dir/runs/NAME) and,
after each epoch, prints the teacher's weighted 20-NN top-1 (%) on SPEC@val (features of SPEC@train as
the bank; T = 0.07); one JSON row per run is appended to --dir/results.jsonl. An experiment, not a test:
the machine it ran on was shared, so seconds are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-train-10k.npz"


def make_data(src: Path, out: Path, per_class_dev: int = 800, seed: int = 12345) -> None:
    d = np.load(src)
    x, y = d["images"], d["labels"]
    rng = np.random.default_rng(seed)
    dev, final = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        dev.append(idx[:per_class_dev])
        final.append(idx[per_class_dev:])
    out.mkdir(parents=True, exist_ok=True)
    for name, idx in (("cifar-dev", np.sort(np.concatenate(dev))), ("cifar-final", np.sort(np.concatenate(final)))):
        np.savez(out / f"{name}.npz", images=x[idx], labels=y[idx], classes=d["classes"])
        print(f"{out / name}.npz: {len(idx)} images, per class {np.bincount(y[idx]).tolist()}")


def knn20(enc, tr, va) -> float:
    from gensis.eval.knn import knn_classify

    def feats(ds):
        x = torch.from_numpy(ds.stack()).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
        return torch.cat([enc(b) for b in x.split(500)]).numpy()

    return knn_classify(feats(tr), tr.labels, feats(va), va.labels, [20], 0.07)[20][0]


def run(args) -> None:
    from gensis.config import load_config
    from gensis.data import open_data
    from gensis.models.encoder import Encoder
    from gensis.ssl.train import train

    cfg = load_config("pretrain", args.preset, args.overrides)
    tr, va = open_data(args.data, "train"), open_data(args.data, "val")
    t0, curve = time.time(), []

    def on_epoch_end(epoch: int, backbone) -> dict:
        backbone.eval()
        with torch.no_grad():
            top1 = knn20(Encoder(backbone, cfg["data"]["image_size"], args.name, args.name), tr, va)
        backbone.train()
        row = {"knn20": round(top1, 2), "seconds": round(time.time() - t0, 1)}
        curve.append(row["knn20"])
        print(args.name, "epoch", epoch, row, flush=True)
        return row

    out = Path(args.dir) / "runs" / args.name
    train(cfg, args.data, str(out), quiet=True, on_epoch_end=on_epoch_end)
    row = {"name": args.name, "data": args.data, "preset": args.preset, "overrides": args.overrides,
           "knn20_per_epoch": curve, "seconds": round(time.time() - t0, 1)}
    with open(Path(args.dir) / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def baselines(args) -> None:
    from gensis.data import open_data
    from gensis.models.encoder import load_encoder

    tr, va = open_data(args.data, "train"), open_data(args.data, "val")
    for spec in ("random", "pixels"):
        enc = load_encoder(spec, image_size=args.image_size)
        with torch.no_grad():
            print(spec, "20-NN top-1", round(knn20(enc, tr, va), 2), flush=True)


def make_tiles(slide: Path, out: Path, size: int = 64, stride: int = 32, shift: int = 16,
               max_mean: float = 200.0) -> None:
    """Tissue tiles of a slide, for pretraining, and a shifted-tile retrieval set (the histology proxy).

    Level-0 windows of ``size`` px every ``stride`` px whose mean grey level is below ``max_mean`` (tissue,
    not glass) go to ``wsi-tiles.npz`` (unlabelled; labels are all 0). The proxy, ``wsi-retrieval.npz``:
    a gallery of the tissue windows on the non-overlapping ``size`` grid (labels 0..G-1) and, for each, a
    query window shifted by ``shift`` px right and down (overlapping its source by ((size-shift)/size)², 56 %
    at 64/16, and the next gallery tile by at most 19 %), labelled with its source's index. Score: top-1 of
    the nearest gallery tile (cosine) = the fraction of queries whose nearest tile is their source.
    """
    import tiffslide

    s = tiffslide.TiffSlide(str(slide))
    w, h = s.dimensions
    im = np.asarray(s.read_region((0, 0), 0, (w, h)).convert("RGB"))  # (H, W, 3)

    def tissue(y: int, x: int) -> bool:
        return float(im[y:y + size, x:x + size].mean()) < max_mean

    train = [im[y:y + size, x:x + size] for y in range(0, h - size + 1, stride)
             for x in range(0, w - size + 1, stride) if tissue(y, x)]
    gal, qry = [], []
    for y in range(0, h - size - shift + 1, size):
        for x in range(0, w - size - shift + 1, size):
            if tissue(y, x):
                gal.append(im[y:y + size, x:x + size])
                qry.append(im[y + shift:y + shift + size, x + shift:x + shift + size])
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "wsi-tiles.npz", images=np.stack(train), labels=np.zeros(len(train), np.int64))
    n = len(gal)
    np.savez(out / "wsi-retrieval.npz", gallery=np.stack(gal), queries=np.stack(qry), labels=np.arange(n))
    print(f"{out}/wsi-tiles.npz: {len(train)} tissue tiles of {size} px (stride {stride});"
          f" wsi-retrieval.npz: {n} gallery tiles and {n} queries shifted by {shift} px")


def tile_proxy(args) -> None:
    from gensis.eval.knn import knn_classify
    from gensis.models.encoder import load_encoder

    d = np.load(args.retrieval)
    for spec in args.encoders:
        enc = load_encoder(spec, image_size=args.image_size if spec in ("random", "pixels") else None)

        def feats(a):
            return torch.cat([enc(b) for b in torch.from_numpy(a).permute(0, 3, 1, 2).split(500)]).numpy()

        with torch.no_grad():
            top1 = knn_classify(feats(d["gallery"]), d["labels"], feats(d["queries"]), d["labels"], [1], 0.07)[1][0]
        print(f"{spec}: shifted-tile retrieval top-1 {top1:.2f} % ({len(d['labels'])} queries)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/gensis-sweep")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("data")
    p.add_argument("--src", default=str(CIFAR))
    p = sub.add_parser("baselines")
    p.add_argument("--data", default="/tmp/gensis-sweep/cifar-dev.npz")
    p.add_argument("--image-size", type=int, default=28)
    p = sub.add_parser("run")
    p.add_argument("name")
    p.add_argument("--data", default="/tmp/gensis-sweep/cifar-dev.npz")
    p.add_argument("--preset", default="demo")
    p.add_argument("overrides", nargs="*")
    p = sub.add_parser("tiles")
    p.add_argument("--slide", default="../shared/data/wsi/cmu-1-small-region.svs")
    p = sub.add_parser("tile-proxy")
    p.add_argument("encoders", nargs="+", help="run directories, 'random', 'pixels'")
    p.add_argument("--retrieval", default="/tmp/gensis-sweep/wsi-retrieval.npz")
    p.add_argument("--image-size", type=int, default=28)
    args = ap.parse_args()
    if args.cmd == "tiles":
        make_tiles(Path(args.slide), Path(args.dir))
    elif args.cmd == "tile-proxy":
        tile_proxy(args)
    elif args.cmd == "data":
        make_data(Path(args.src), Path(args.dir))
    elif args.cmd == "baselines":
        baselines(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
