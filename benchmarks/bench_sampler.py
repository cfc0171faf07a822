"""Sampler benchmark of the E-LDM, in one run:

1. images/s of our sampler (``ELDMGenerator.generate``: DDIM, conditional and unconditional halves of
   classifier-free guidance in ONE UNet call per step) versus a plain loop over diffusers' own
   ``DDIMScheduler`` with the same UNet and CFG done as two separate passes per step; prints the ratio and
   checks that both give the same images (they compute the same thing).
2. DDIM-50 versus DPM-Solver++ with fewer steps: images/s and the fidelity numbers of ``gensis eldm eval``
   (source retrieval, k-NN label agreement, Fréchet distance) for each.

    .venv/bin/python benchmarks/bench_sampler.py --eldm RUN [--data builtin:animal-mnist] [--n 200]
        [--batch 64] [--dpmpp-steps 10,20] [--threads 2] [--json out.json]

Without --eldm a randomly initialised model of the demo preset's shape is timed (part 1 only).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def diffusers_loop(gen, embeddings: torch.Tensor, seeds, guidance: float, steps: int) -> torch.Tensor:
    """The reference: diffusers' DDIMScheduler, CFG as two UNet passes per step (no batching of the halves)."""
    from diffusers import DDIMScheduler

    from gensis.eldm.autoencoder import to_uint8
    from gensis.eldm.ddim_sampler import initial_noise

    s = gen.schedule
    sch = DDIMScheduler(num_train_timesteps=s.timesteps, trained_betas=s.betas.numpy().tolist(),
                        prediction_type=s.prediction, clip_sample=gen.defaults.clip is not None,
                        clip_sample_range=gen.defaults.clip or 1.0, timestep_spacing=gen.defaults.spacing,
                        set_alpha_to_one=True)
    sch.set_timesteps(steps)
    den = gen.denoiser
    with torch.no_grad():
        x, _ = initial_noise(seeds, gen.latent_shape, gen.device)
        c = den.condition(embeddings.to(gen.device))
        null = den.null_context.expand_as(c)
        for t in sch.timesteps:
            tt = t.expand(len(x)).to(gen.device)
            eps_c = den(x, tt, c)  # pass 1: conditional
            eps_u = den(x, tt, null)  # pass 2: unconditional
            eps = eps_u + guidance * (eps_c - eps_u)
            x = sch.step(eps, t, x, eta=0.0, use_clipped_model_output=gen.defaults.clip is not None).prev_sample
        return to_uint8(gen.autoencoder.decode(x).clamp(-1, 1))


def random_generator(device: str):
    from gensis.config import load_config
    from gensis.eldm.autoencoder import PixelSpace
    from gensis.eldm.ddim_sampler import SamplerSettings
    from gensis.eldm.model import ELDMGenerator, resolve_clip
    from gensis.eldm.schedule import NoiseSchedule
    from gensis.eldm.train import build_denoiser

    cfg = load_config("eldm", "demo")
    size = int(cfg["data"]["image_size"])
    if cfg["space"] == "vq":  # an untrained autoencoder of the demo's shape: only the timing matters
        from gensis.eldm.autoencoder import VQAutoencoder, build_vq

        ae = VQAutoencoder(build_vq(cfg["ae"]["model"], size)).to(device).eval()
    else:
        ae = PixelSpace(int(cfg["pixel_patch"]))
    den = build_denoiser(cfg, 192, ae.channels, size // ae.factor).to(device)
    smp = cfg["sample"]
    settings = SamplerSettings("ddim", int(smp["steps"]), float(smp["guidance"]), 0.0, smp["spacing"],
                               resolve_clip(smp["clip"], ae.space))
    return ELDMGenerator(den, ae, NoiseSchedule.from_cfg(cfg["diffusion"]), None, size,
                         (ae.channels, size // ae.factor, size // ae.factor), settings, "random", device)


def timed_interleaved(fns: dict, repeat: int = 1) -> tuple[dict, dict]:
    """Best wall time of each function, the functions run in turn ``repeat`` times (fair on a noisy machine)."""
    best: dict = {}
    outs: dict = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            dt = time.perf_counter() - t0
            best[name] = min(best.get(name, dt), dt)
    return outs, best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eldm", default=None, help="finished `gensis eldm train` run (default: random demo model)")
    ap.add_argument("--data", default="builtin:animal-mnist")
    ap.add_argument("--batch", type=int, default=64, help="images per timed call")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps of part 1")
    ap.add_argument("--guidance", type=float, default=None, help="CFG scale (default: the run's)")
    ap.add_argument("--n", type=int, default=200, help="held-out images for the fidelity numbers (part 2; 0 skips part 2)")
    ap.add_argument("--dpmpp-steps", default="10,20", help="DPM-Solver++ step counts to compare with DDIM-50")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions, interleaved (the best is kept)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from gensis.eldm import load_generator

    gen = load_generator(args.eldm, device=args.device) if args.eldm else random_generator(args.device)
    w = gen.defaults.guidance if args.guidance is None else args.guidance
    dim = gen.denoiser.conditioner.proj[1].in_features
    e = torch.randn(args.batch, dim, generator=torch.Generator().manual_seed(0))
    seeds = list(range(args.batch))
    report: dict = {"eldm": args.eldm, "batch": args.batch, "steps": args.steps, "guidance": w,
                    "threads": torch.get_num_threads(), "device": args.device}

    # 1. our sampler vs diffusers' DDIMScheduler with two CFG passes
    gen.generate(e, seeds, guidance=w, steps=2, sampler="ddim")  # warm-up: oneDNN builds its kernels per shape
    diffusers_loop(gen, e, seeds, w, 2)
    outs, best = timed_interleaved({
        "ours": lambda: gen.generate(e, seeds, guidance=w, steps=args.steps, sampler="ddim"),
        "diffusers": lambda: diffusers_loop(gen, e, seeds, w, args.steps)}, args.repeat)
    ours, ref, t_ours, t_ref = outs["ours"], outs["diffusers"], best["ours"], best["diffusers"]
    diff = (ours.int() - ref.int()).abs()
    report["ours_images_per_s"] = args.batch / t_ours
    report["diffusers_two_pass_images_per_s"] = args.batch / t_ref
    report["speedup"] = t_ref / t_ours
    report["max_abs_pixel_difference"] = int(diff.max())
    report["pixels_differing"] = float((diff > 0).float().mean())
    print(f"[1] DDIM-{args.steps}, guidance {w:g}, batch {args.batch}, {torch.get_num_threads()} threads")
    print(f"    ours (CFG halves in one call)           {report['ours_images_per_s']:8.2f} images/s")
    print(f"    diffusers DDIMScheduler, 2 CFG passes   {report['diffusers_two_pass_images_per_s']:8.2f} images/s")
    print(f"    ratio ours/diffusers                    {report['speedup']:8.2f}x")
    print(f"    same images: max |difference| {report['max_abs_pixel_difference']} grey level(s), "
          f"{100 * report['pixels_differing']:.3f}% of pixels differ")

    # 2. DDIM-50 vs DPM-Solver++ at fewer steps, with fidelity
    if args.eldm and args.n > 0:
        from pathlib import Path

        from gensis.data.sources import open_data
        from gensis.eldm.evaluate import evaluate, format_report
        from gensis.eldm.train import cached_embeddings
        from gensis.rundir import RunDir

        d = RunDir(args.eldm).config()["data"]
        val = open_data(args.data, "val", d["val_fraction"], d["split_seed"])
        tr = open_data(args.data, "train", d["val_fraction"], d["split_seed"])
        te = cached_embeddings(Path(args.eldm) / "cache", gen.encoder, tr, gen.device, 256, tag="eval-train")
        rows = []
        for name, steps in [("ddim", 50)] + [("dpmpp", int(s)) for s in args.dpmpp_steps.split(",") if s]:
            r = evaluate(gen, val, tr, te, n=args.n, seed=0, batch_size=100, quiet=True, guidance=w, steps=steps,
                         sampler=name)
            rows.append(r)
            print(format_report(r))
        report["fidelity"] = rows
        print(f"\n[2] {'sampler':<10}{'steps':>6}{'img/s':>9}{'top-1':>8}{'top-5':>8}{'label':>8}{'FD':>9}")
        for r in rows:
            print(f"    {r['sampler']:<10}{r['steps']:>6}{r['images_per_s']:>9.2f}{r['retrieval_top1']:>8.3f}"
                  f"{r['retrieval_top5']:>8.3f}{r.get('label_agreement', float('nan')):>8.3f}"
                  f"{r['frechet_distance']:>9.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
