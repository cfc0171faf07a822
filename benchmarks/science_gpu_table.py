"""The table of benchmarks/science_gpu.sh: 20-NN (and 10-NN) top-1 on the held-out split for DINO, the pixel
ablation and Gen-DINO of each seed folder, next to the raw-pixel and random-init baselines (random-init has the
DINO run's architecture), with the paired differences Gen-DINO - DINO and pixel - DINO per seed and as
mean +- sample std over seeds.

    python benchmarks/science_gpu_table.py --data DATA SEED_DIR [SEED_DIR ...] [--device auto] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROWS = [("dino", "DINO"), ("pixel", "DINO w/ pixel disent."), ("gendino", "Gen-DINO"),
        ("pixels", "raw pixels"), ("random", "random-init ViT")]


def evaluate_seed(seed_dir: Path, data: str, device) -> dict[str, dict[int, float]]:
    """{row: {k: top1 %}} for the runs of one seed folder and the two baselines."""
    from gensis.data.sources import open_data
    from gensis.eval.knn import knn_eval
    from gensis.models.encoder import load_encoder
    from gensis.rundir import RunDir

    cfg = RunDir(seed_dir / "dino").config()
    vf, split_seed, size = cfg["data"]["val_fraction"], cfg["data"]["split_seed"], cfg["data"]["image_size"]
    train_ds = open_data(data, "train", vf, split_seed, cfg["data"]["limit"])  # the images the runs saw
    test_ds = open_data(data, "val", vf, split_seed)
    out = {}
    for name, _ in ROWS:
        if name in ("pixels", "random"):
            enc = load_encoder(name, image_size=size, like=str(seed_dir / "dino") if name == "random" else None)
        elif RunDir(seed_dir / name).is_done():
            enc = load_encoder(str(seed_dir / name))
        else:
            continue
        r = knn_eval(enc, train_ds, test_ds, ks=(10, 20), device=device)
        out[name] = {row["k"]: row["top1"] for row in r["results"]}
        out.setdefault("_n", {"train": len(train_ds), "test": len(test_ds)})
    return out


def _mean_std(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:6.2f}"
    return f"{statistics.mean(xs):6.2f} ± {statistics.stdev(xs):4.2f}"


def format_table(per_seed: list[dict], k: int = 20) -> str:
    lines = [f"{k}-NN top-1 (%) on {per_seed[0]['_n']['test']} held-out images "
             f"({per_seed[0]['_n']['train']} training images), {len(per_seed)} seed(s)"]
    for name, label in ROWS:
        xs = [s[name][k] for s in per_seed if name in s]
        if xs:
            lines.append(f"  {label:24s} {_mean_std(xs)}")
    for a, label in (("gendino", "Gen-DINO - DINO"), ("pixel", "pixel - DINO")):
        d = [s[a][k] - s["dino"][k] for s in per_seed if a in s and "dino" in s]
        if d:
            lines.append(f"  {label:24s} {_mean_std(d)}   (paired, per seed: "
                         f"{', '.join(f'{x:+.2f}' for x in d)})")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("seed_dirs", nargs="+", type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from gensis.device import pick_device

    dev = pick_device(a.device)
    per_seed = [evaluate_seed(d, a.data, dev) for d in a.seed_dirs]
    for k in (20, 10):
        print(format_table(per_seed, k))
    if a.json:
        from gensis.rundir import atomic_write_json

        atomic_write_json(a.json, {"device": str(dev), "data": a.data,
                                   "seeds": {str(d): s for d, s in zip(a.seed_dirs, per_seed)}})
        print(f"results written to {a.json}")


if __name__ == "__main__":
    main()
