"""CPU time per bank image of an E-LDM at several denoiser micro-batches, and whether the images are the same.

    .venv/bin/python benchmarks/bench_bank_micro_batch.py --eldm DEMO/eldm --emb DEMO/bank/embeddings/emb-000000.npy
    .venv/bin/python benchmarks/bench_bank_micro_batch.py --eldm DEMO/eldm --emb ... --threads 1 --micro 32,128,256 --amp off

Generates ``--n`` entries (the bank's call: the given sampler, steps, guidance; seeds 0..n−1) from the first
``--n`` embeddings of a bank's embedding file, once per micro-batch (after one warm-up), and prints the CPU
time (``time.process_time``: this process, all threads) and wall time per image, and the largest difference in
grey levels to the first micro-batch's images. CPU time is what to compare on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--eldm", required=True)
    p.add_argument("--emb", required=True, help="a bank's embeddings/emb-SSSSSS.npy (float32 (N, D))")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--micro", default="32,128,256")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--amp", default="auto", help="auto | bf16 | off")
    p.add_argument("--sampler", default="dpmpp")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--guidance", type=float, default=2.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from gensis.eldm.model import load_generator

    e = torch.from_numpy(np.ascontiguousarray(np.load(a.emb)[:a.n]))
    seeds = list(range(len(e)))
    print(f"{a.eldm}: {len(e)} entries, {a.sampler} {a.steps} steps, guidance {a.guidance:g}, "
          f"{torch.get_num_threads()} thread(s), amp {a.amp}")
    first = None
    for m in (int(x) for x in a.micro.split(",")):
        gen = load_generator(a.eldm, "cpu", amp=a.amp, micro_batch=m)
        run = lambda: gen.generate(e, seeds, guidance=a.guidance, steps=a.steps, sampler=a.sampler)  # noqa: E731
        run()  # warm-up
        c0, w0 = time.process_time(), time.perf_counter()
        imgs = run()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        diff = 0 if first is None else int((imgs.int() - first.int()).abs().max())
        first = imgs if first is None else first
        print(f"micro-batch {m:4d}: CPU {cpu / len(e) * 1000:6.2f} ms/image, wall {wall / len(e) * 1000:6.2f} "
              f"ms/image, bf16 {gen.bf16}, max difference to the first: {diff} grey levels")


if __name__ == "__main__":
    main()
