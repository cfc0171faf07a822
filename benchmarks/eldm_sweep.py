"""Convergence sweep of the E-LDM: train a configuration and measure it after selected epochs.

The measurements of docs/eldm.md (pixel vs VQ-f4, cross-attention vs timestep conditioning, Min-SNR, schedule)
come from this script. After each listed epoch count it resumes the same run to that epoch, then reports the
fidelity numbers on held-out images (``gensis.eldm.evaluate``), the held-out denoising loss with and without
the condition, the training seconds, and writes the PNG grids to RUN/fig_e<epochs>/.

    .venv/bin/python benchmarks/eldm_sweep.py OUT --encoder ENC_RUN [--ae AE_RUN] [--evals 4,8] [--n 100]
        [--steps 20] [--guidance G] [--preset demo] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from gensis.config import load_config
    from gensis.data.sources import open_data
    from gensis.eldm import load_generator
    from gensis.eldm.evaluate import evaluate, format_report
    from gensis.eldm.figures import write_figures
    from gensis.eldm.train import cached_embeddings, train

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--ae", default=None)
    ap.add_argument("--data", default="builtin:animal-mnist")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--evals", default="1,2", help="epoch counts after which to measure")
    ap.add_argument("--n", type=int, default=100, help="held-out images per measurement")
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps of the measurement samples")
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    a, overrides = ap.parse_known_args()
    torch.set_num_threads(a.threads)
    val, tr = open_data(a.data, "val"), open_data(a.data, "train")
    results = []
    total = 0.0
    for k in [int(x) for x in a.evals.split(",")]:
        cfg = load_config("eldm", a.preset, overrides + [f"optim.epochs={k}", f"train.threads={a.threads}"])
        train(cfg, a.encoder, a.data, a.out, ae_path=a.ae, resume=True, quiet=True)
        rows = [json.loads(line) for line in open(Path(a.out) / "metrics.jsonl")]
        manifest = json.loads((Path(a.out) / "manifest.json").read_text())
        total += float(manifest.get("train_seconds", 0.0))  # this segment's training time
        g = load_generator(a.out, steps=a.steps, guidance=a.guidance)
        te = cached_embeddings(Path(a.out) / "cache", g.encoder, tr, "cpu", 256, tag="eval-train")
        t0 = time.time()
        r = evaluate(g, val, tr, te, n=a.n, batch_size=50, knn_k=20, quiet=True)
        write_figures(g, val, Path(a.out) / f"fig_e{k}", {"rows": 10, "per_image": 5, "pairs": 4, "scale": 3,
                                                         "alphas": [0.8, 0.6, 0.4, 0.2], "method": "slerp", "seed": 0})
        r.update(epochs=k, train_steps=rows[-1]["step"] + 1, train_seconds=round(total, 1),
                 last_loss=rows[-1]["loss"], eval_seconds=round(time.time() - t0, 1))
        results.append(r)
        print(f"after {k} epochs ({r['train_steps']} steps, {total:.0f} s of training):")
        print(format_report(r), flush=True)
    (Path(a.out) / "sweep.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
