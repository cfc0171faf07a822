"""Cost of one training step of the E-LDM pieces at demo size (batch 64, 28 px / 7×7×3 VQ-f4 latents).

Times the median of ``--steps`` forward+backward+AdamW steps (after 2 warm-up steps) of: the demo VQ
autoencoder, and the denoiser UNet with each conditioning mode / attention layout of docs/eldm.md, for each
thread count given.

    .venv/bin/python benchmarks/bench_train_step.py [--threads 1,2] [--steps 10] [--amp off|bf16] [--only TEXT]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = [  # name, cond.mode, unet.attention, in-space (channels, size), cond.tokens
    ("denoiser time, no attention (demo)", "time", [False, False], (3, 7), 1),
    ("denoiser both, attention at level 2", "both", [False, True], (3, 7), 1),
    ("denoiser cross_attn, attention at level 2", "cross_attn", [False, True], (3, 7), 1),
    ("denoiser cross_attn, attention at level 2, 4 tokens", "cross_attn", [False, True], (3, 7), 4),
    ("denoiser time, pixel space 28x28x3, [32,64]", "time", [False, False], (3, 28), 1),
]


def median_step(step, n: int) -> float:
    ts = []
    for i in range(n + 2):
        t0 = time.perf_counter()
        step()
        if i >= 2:
            ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def main() -> None:
    from gensis.config import load_config
    from gensis.eldm.autoencoder import VQAutoencoder, build_vq
    from gensis.eldm.denoiser import Denoiser

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--amp", default="off", help="off | bf16 (bf16 autocast, as train.amp=bf16)")
    ap.add_argument("--only", default=None, help="time only the pieces whose name contains this text")
    a = ap.parse_args()
    cfg = load_config("eldm", "demo")
    b = a.batch
    from gensis.device import autocast

    amp = autocast(torch.device("cpu"), a.amp == "bf16")
    print(f"load average {os.getloadavg()[0]:.2f}, amp {a.amp}")
    for threads in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        ae = VQAutoencoder(build_vq(cfg["ae"]["model"], 28))
        opt = torch.optim.AdamW(ae.parameters(), 1e-3)
        x = torch.rand(b, 3, 28, 28) * 2 - 1

        def ae_step():
            with amp:
                xh, q = ae(x)
                loss = (xh.float() - x).abs().mean() + q.float()
            opt.zero_grad()
            loss.backward()
            opt.step()

        if a.only is None or a.only in "VQ autoencoder (demo)":
            print(f"[{threads} thread(s)] VQ autoencoder (demo): {1000 * median_step(ae_step, a.steps):.0f} ms/step")
        for name, mode, attn, (ch, size), tokens in VARIANTS:
            if a.only is not None and a.only not in name:
                continue
            u = dict(cfg["unet"], attention=attn)
            if size == 28:
                u["block_out_channels"] = [32, 64]
            torch.manual_seed(0)
            m = Denoiser(192, ch, size, u, int(u["context_dim"]), mode, tokens)
            o = torch.optim.AdamW(m.parameters(), 1e-3)
            xs, t, e = torch.randn(b, ch, size, size), torch.randint(0, 1000, (b,)), torch.randn(b, 192)

            def den_step():
                with amp:
                    loss = (m(xs, t, emb=e).float() - xs).pow(2).mean()
                o.zero_grad()
                loss.backward()
                o.step()

            n_par = sum(p.numel() for p in m.parameters()) / 1e6
            print(f"[{threads} thread(s)] {name} ({n_par:.2f}M): {1000 * median_step(den_step, a.steps):.0f} ms/step",
                  flush=True)


if __name__ == "__main__":
    main()
