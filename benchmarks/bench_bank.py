"""Bank throughput against the generator alone: the cost of storage (encode + write) on top of sampling.

    python benchmarks/bench_bank.py                          # fake generator, 20 ms/image of "GPU" time
    python benchmarks/bench_bank.py --fake-ms 0 --fake-work 50   # a CPU-bound fake instead (shares the CPU)
    python benchmarks/bench_bank.py --eldm runs/eldm --preset demo   # the real E-LDM

For the same images (same embeddings, seeds, batches), it times (a) the generator alone: ``generate()`` over every
batch, nothing stored; (b) ``gensis bank generate``'s generation phase: the same calls plus PNG/WebP/JPEG/raw
encoding on the writer thread and atomic shard writes. It prints both rates and the overhead (a)/(b) − 1.
The fake generator's ``delay`` sleeps like a CPU waiting for a GPU, which is what the writer thread overlaps.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")

from gensis.bank.fake import FakeGenerator  # noqa: E402
from gensis.bank.generate import EmbeddingStore, conditioning, embed_shards, generate_bank, load_generator  # noqa: E402
from gensis.bank.header import IMAGENET_TRAIN  # noqa: E402
from gensis.bank.plan import Layout, plan_shard  # noqa: E402
from gensis.config import load_config  # noqa: E402
from gensis.data.sources import open_data  # noqa: E402
from gensis.device import pick_device  # noqa: E402


def sampler_alone(gen, cfg: dict, ds, tmp: Path) -> tuple[float, int]:
    """Seconds to generate every entry of the bank with nothing stored; and the number of entries."""
    g, st, r = cfg["gen"], cfg["storage"], cfg["run"]
    layout = Layout(len(ds), int(g["num_generative"]), tuple(float(a) for a in g["alphas"]), int(st["shard_size"]))
    groups = None
    store = EmbeddingStore(tmp, layout)
    (tmp / "embeddings").mkdir(parents=True, exist_ok=True)
    embed_shards(gen, ds, layout, list(range(layout.num_shards)), store, int(r["encode_batch_size"]))
    plans = [plan_shard(layout, s, int(g["seed"]), groups) for s in range(layout.num_shards)]
    conds = [conditioning(p, store, g["interpolation"]) for p in plans]
    bs = int(r["batch_size"])
    t0 = time.perf_counter()
    n = 0
    for plan, cond in zip(plans, conds):
        for b in range(0, len(plan), bs):
            sl = slice(b, min(b + bs, len(plan)))
            with torch.no_grad():
                imgs = gen.generate(cond[sl], [int(x) for x in plan.seed[sl]], guidance=g["guidance"],
                                    steps=g["steps"], sampler=g["sampler"])
            imgs.cpu()
            n += sl.stop - sl.start
    return time.perf_counter() - t0, n


def reader_threads() -> int:
    return min(4, os.cpu_count() or 1)


def reader_rate(bank: Path, batch: int = 256) -> float:
    """Images/s of BankReader.generative_batch on random batches (a training step's read)."""
    from gensis.bank import BankReader

    r = BankReader(bank)
    rng = np.random.default_rng(0)
    r.generative_batch(np.arange(min(batch, r.num_images)), np.zeros(min(batch, r.num_images), int))  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 2.0:
        idx = rng.integers(0, r.num_images, batch)
        r.generative_batch(idx, rng.integers(0, max(r.num_generative, 1), batch))
        n += batch
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eldm", default=None, help="E-LDM run (default: the fake generator)")
    ap.add_argument("--data", default="builtin:animal-mnist")
    ap.add_argument("--n", type=int, default=256, help="images (primaries)")
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--fake-size", type=int, default=128, help="fake generator's image size")
    ap.add_argument("--fake-ms", type=float, default=20.0, help="fake: ms slept per image (emulated GPU time)")
    ap.add_argument("--fake-work", type=int, default=0, help="fake: CPU smoothing passes per image")
    ap.add_argument("--repeats", type=int, default=2, help="alternate (alone, bank) this many times; best is kept")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="bank config overrides")
    args = ap.parse_args()

    cfg = load_config("bank", args.preset, [f"data.limit={args.n}", *args.overrides])
    if cfg["run"].get("threads"):
        torch.set_num_threads(int(cfg["run"]["threads"]))
    device = pick_device(cfg["run"]["device"])
    if args.eldm:
        gen = load_generator(args.eldm, device, cfg["gen"])
        what = f"E-LDM {args.eldm}"
    else:
        gen = FakeGenerator(image_size=args.fake_size, dim=16, delay=args.fake_ms / 1000, work=args.fake_work)
        what = f"fake generator ({args.fake_size}px, {args.fake_ms:g} ms/image sleep, {args.fake_work} CPU passes)"
    ds = open_data(args.data, "train", cfg["data"]["val_fraction"], cfg["data"]["split_seed"], cfg["data"]["limit"])
    alone, bank, read, enc_share, res = [], [], [], [], None
    root = Path(tempfile.mkdtemp(prefix="bench_bank_"))
    try:
        for rep in range(args.repeats):
            secs, n = sampler_alone(gen, cfg, ds, root / f"alone{rep}")
            alone.append(n / secs)
            out = root / f"bank{rep}"
            res = generate_bank(cfg, args.data, out, generator=gen, quiet=True)
            assert res.complete and res.generated == n
            bank.append(res.images_per_s)
            enc_share.append(res.extra["encode_seconds_rank0"] / res.seconds)
            size = sum(p.stat().st_size for p in (out / "shards").iterdir())
            read.append(reader_rate(out))
            print(f"  repeat {rep}: alone {alone[-1]:.1f} images/s, bank {bank[-1]:.1f} images/s "
                  f"(writer encode time {res.extra['encode_seconds_rank0']:.2f} s of {res.seconds:.2f} s)",
                  file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    a, b = max(alone), max(bank)
    st = cfg["storage"]
    print(f"generator: {what}; device {device}; torch threads {torch.get_num_threads()}")
    print(f"bank: {n} entries ({len(ds)} images x {res.entries_per_image}), codec {st['codec']}, batch "
          f"{cfg['run']['batch_size']}, writer threads {cfg['run']['writer_threads']}, "
          f"{size / n / 1024:.1f} KiB/entry")
    print(f"sampler alone: {a:.2f} images/s   bank generate: {b:.2f} images/s   "
          f"storage overhead: {100 * (a / b - 1):+.1f}%   (best of {args.repeats})")
    ratios = sorted(x / y - 1 for x, y in zip(alone, bank))
    print(f"per-repeat overhead median {100 * ratios[len(ratios) // 2]:+.1f}% (range {100 * ratios[0]:+.1f}% .. "
          f"{100 * ratios[-1]:+.1f}%); writer thread busy encoding {100 * float(np.median(enc_share)):.1f}% of the "
          f"generation time (overlapped)")
    print(f"BankReader.generative_batch (random batches of 256, {reader_threads()} decode threads): "
          f"{max(read):.0f} images/s")
    print(f"projected paper ImageNet-1K bank ({IMAGENET_TRAIN * 5:,} images) at the bank rate: "
          f"{IMAGENET_TRAIN * 5 / b / 3600:.1f} h" + ("" if args.eldm else " (fake generator: not an E-LDM estimate)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
