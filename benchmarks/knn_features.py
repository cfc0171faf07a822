"""Which frozen feature of a pretraining run does a k-NN reward? CLS, mean patch token, both, z-scored.

    python benchmarks/knn_features.py --data /tmp/gensis-sweep/cifar-dev.npz RUN [RUN ...] [random]

For each encoder (a pretraining run folder, or ``random``: the random-init ViT of the first run's
architecture) it prints the weighted 20-NN top-1 (%) on DATA@val with DATA@train as the bank (T = 0.07, as
`gensis eval knn`) for: the CLS token after the final norm (what gensis and DINO evaluate), the mean of the
patch tokens, their concatenation (DINO's linear eval for ViT-B uses CLS + average-pooled patch tokens), and
each of these z-scored per dimension with the bank's statistics. An experiment, not a test.
"""

from __future__ import annotations

import argparse

import torch

from gensis.data import open_data
from gensis.eval.knn import knn_classify
from gensis.models.encoder import load_encoder, normalize


def features(enc, ds) -> torch.Tensor:
    x = torch.from_numpy(ds.stack()).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8
    out = []
    with torch.no_grad():
        for b in x.split(500):
            b = torch.nn.functional.interpolate(b.float() / 255, size=enc.image_size, mode="bilinear",
                                                antialias=True)
            t = enc.model.forward_features(normalize(b))  # (B, 1 + N, D)
            out.append(torch.cat([t[:, 0], t[:, 1:].mean(1)], 1))  # (B, 2D): CLS | mean patch
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/gensis-sweep/cifar-dev.npz")
    ap.add_argument("encoders", nargs="+")
    args = ap.parse_args()
    tr, va = open_data(args.data, "train"), open_data(args.data, "val")
    runs = [e for e in args.encoders if e != "random"]
    for spec in args.encoders:
        enc = load_encoder(spec, like=runs[0] if runs else None) if spec == "random" else load_encoder(spec)
        ftr, fva = features(enc, tr).numpy(), features(enc, va).numpy()
        d = ftr.shape[1] // 2
        res = {}
        for name, sl in (("cls", slice(0, d)), ("mean", slice(d, 2 * d)), ("cls+mean", slice(0, 2 * d))):
            a, b = ftr[:, sl], fva[:, sl]
            res[name] = knn_classify(a, tr.labels, b, va.labels, [20], 0.07)[20][0]
            mu, sd = a.mean(0), a.std(0) + 1e-6
            res[name + " z"] = knn_classify((a - mu) / sd, tr.labels, (b - mu) / sd, va.labels, [20], 0.07)[20][0]
        print(spec, " ".join(f"{k}={v:.2f}" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
