"""k-NN accuracy of the DINO teacher after every epoch, for choosing small-scale recipes.

    python benchmarks/dino_knn_curve.py NAME [--preset demo] [--data builtin:animal-mnist] [key=value ...]

Trains `gensis pretrain` with the given overrides into /tmp/knn_curve_NAME and prints, after each epoch,
the 20-NN top-1 (%) on the val split and the elapsed seconds. An experiment, not a test.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from gensis.config import load_config  # noqa: E402
from gensis.data import open_data  # noqa: E402
from gensis.eval.knn import knn_classify  # noqa: E402
from gensis.models.encoder import Encoder  # noqa: E402
from gensis.ssl.train import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--data", default="builtin:animal-mnist")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config("pretrain", args.preset, args.overrides)
    tr, va = open_data(args.data, "train"), open_data(args.data, "val")
    x_tr = torch.from_numpy(tr.stack()).permute(0, 3, 1, 2)
    x_va = torch.from_numpy(va.stack()).permute(0, 3, 1, 2)
    t0 = time.time()

    def on_epoch_end(epoch: int, backbone) -> dict:
        backbone.eval()
        enc = Encoder(backbone, cfg["data"]["image_size"], args.name, args.name)
        f_tr = torch.cat([enc(x) for x in x_tr.split(500)]).numpy()
        f_va = torch.cat([enc(x) for x in x_va.split(500)]).numpy()
        backbone.train()
        top1 = knn_classify(f_tr, tr.labels, f_va, va.labels, [20], 0.07)[20][0]
        row = {"knn20": round(top1, 2), "seconds": round(time.time() - t0, 1)}
        print(args.name, "epoch", epoch, row, flush=True)
        return row

    train(cfg, args.data, f"/tmp/knn_curve_{args.name}", quiet=True, on_epoch_end=on_epoch_end)


if __name__ == "__main__":
    main()
