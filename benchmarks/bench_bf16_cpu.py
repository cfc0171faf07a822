"""bf16 autocast vs fp32 on this CPU, timed interleaved: one training step of the demo DINO model and of the
demo E-LDM pieces (denoiser UNet, VQ autoencoder).

Repetitions alternate fp32, bf16, bf16, fp32, ... so that load from other processes hits both alike; the
report is the ratio of median step times (bf16 / fp32; < 1 means bf16 is faster), not absolute times.
It also prints which bf16 instructions the CPU has (``avx512_bf16``, ``amx_bf16``) and torch's CPU capability.

    .venv/bin/python benchmarks/bench_bf16_cpu.py [--reps 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def interleaved(step, reps: int) -> tuple[float, float]:
    """Median seconds of ``step(bf16)`` for bf16=False and True, alternating ABBA after one warm-up each."""
    step(False)
    step(True)
    times = {False: [], True: []}
    for i in range(reps):
        for bf16 in ((False, True) if i % 2 == 0 else (True, False)):
            t0 = time.perf_counter()
            step(bf16)
            times[bf16].append(time.perf_counter() - t0)
    return statistics.median(times[False]), statistics.median(times[True])


def dino_step_fn(batch: int):
    from gensis.config import load_config
    from gensis.data.batch_augment import BatchDINOAugmentation
    from gensis.data.transforms import MultiCropConfig
    from gensis.models.backbone import build_backbone, embed_dim
    from gensis.models.dino_head import DINOHead
    from gensis.ssl.dino_loss import DINOLoss

    cfg = load_config("pretrain", "demo")
    size, d = cfg["data"]["image_size"], cfg["dino"]
    torch.manual_seed(0)
    bb = build_backbone(cfg["model"], size)
    head = DINOHead(embed_dim(bb), d["out_dim"], d["hidden_dim"], d["bottleneck_dim"])
    params = list(bb.parameters()) + list(head.parameters())

    def model(views: list[torch.Tensor]) -> torch.Tensor:
        """One backbone call per crop resolution (as DINO's multi-crop wrapper), then the head."""
        out, i = [], 0
        while i < len(views):
            j = i
            while j < len(views) and views[j].shape[-1] == views[i].shape[-1]:
                j += 1
            out.append(bb(torch.cat(views[i:j])))
            i = j
        return head(torch.cat(out))

    opt = torch.optim.AdamW(params, 1e-4)
    loss_fn = DINOLoss(d["out_dim"])
    aug = BatchDINOAugmentation(MultiCropConfig.from_cfg(cfg["aug"], size), 0)
    crops = aug(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8))
    dev = torch.device("cpu")

    def step(bf16: bool) -> None:
        from gensis.device import autocast

        with autocast(dev, bf16):
            with torch.no_grad():
                t = model(crops[:2])
            s = model(crops)
        loss = loss_fn(s, t, 0.04, 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def eldm_step_fns(batch: int):
    from gensis.config import load_config
    from gensis.device import autocast
    from gensis.eldm.autoencoder import VQAutoencoder, build_vq
    from gensis.eldm.denoiser import Denoiser

    cfg = load_config("eldm", "demo")
    dev = torch.device("cpu")
    torch.manual_seed(0)
    u = cfg["unet"]
    den = Denoiser(192, 3, 7, u, int(u["context_dim"]), cfg["cond"]["mode"])
    o = torch.optim.AdamW(den.parameters(), 1e-4)
    xs, t, e = torch.randn(batch, 3, 7, 7), torch.randint(0, 1000, (batch,)), torch.randn(batch, 192)

    def den_step(bf16: bool) -> None:
        with autocast(dev, bf16):
            loss = (den(xs, t, emb=e).float() - xs).pow(2).mean()
        o.zero_grad(set_to_none=True)
        loss.backward()
        o.step()

    ae = VQAutoencoder(build_vq(cfg["ae"]["model"], 28))
    oa = torch.optim.AdamW(ae.parameters(), 1e-4)
    x = torch.rand(batch, 3, 28, 28) * 2 - 1

    def ae_step(bf16: bool) -> None:
        with autocast(dev, bf16):
            xh, q = ae(x)
            loss = (xh.float() - x).abs().mean() + q.float()
        oa.zero_grad(set_to_none=True)
        loss.backward()
        oa.step()

    return [("E-LDM denoiser (demo)", den_step), ("VQ autoencoder (demo)", ae_step)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    flags = cpu_flags()
    print(f"cpu: avx512_bf16={'avx512_bf16' in flags} amx_bf16={'amx_bf16' in flags} "
          f"torch capability {torch.backends.cpu.get_cpu_capability()}; threads {a.threads}; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'step':32s} {'fp32 ms':>8s} {'bf16 ms':>8s} {'bf16/fp32':>9s}")
    for name, fn in [("DINO step (demo, batch %d)" % a.batch, dino_step_fn(a.batch)), *eldm_step_fns(a.batch)]:
        f, b = interleaved(fn, a.reps)
        print(f"{name:32s} {1000 * f:8.0f} {1000 * b:8.0f} {b / f:9.2f}", flush=True)


if __name__ == "__main__":
    main()
