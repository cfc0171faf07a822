"""Whole-training throughput: ``gensis.pretrain`` (the real loop: data, batched augmentation, step, EMA,
checkpoint, export) against a training loop written the way lightly's examples write it.

    python benchmarks/bench_pretrain_throughput.py                      # DINO, demo preset, 40 steps, A B A B
    python benchmarks/bench_pretrain_throughput.py --methods dino,ibot,dinov2,simclr --steps 20 --reps 1

Both sides train the same number of steps on the same images (``--data``'s first steps·batch training
images), with the preset's ViT, crops (2 global + n_local local, the preset's sizes and scales) and batch,
in fp32 on the CPU (``--gensis-amp bf16``: gensis in bf16 autocast, its default on CPUs with AMX or
AVX512-BF16, against lightly in fp32, labelled so):

    gensis   gensis.pretrain(data, out, preset=..., overrides=[method, data.limit=steps·batch, optim.epochs=1,
             train.amp=off|bf16]): a run folder with checkpoint and exported weights, as ``gensis pretrain``
    lightly  a torch Dataset giving PIL images (the torchvision dataset pattern) → lightly's DINOTransform
             (multi-crop, PIL) in a DataLoader with ``--workers`` (2) processes, shuffle, drop_last; the step
             of ``_lightly_methods.LightlyStep`` (lightly's heads and losses, EMA with update_momentum)

Each side is timed from the call to the end of training, setup (models, loaders, worker start) included;
images/s = steps · batch / seconds. Also printed: the CPU time each side used (user + system, DataLoader
workers included), which on a machine shared with other jobs says how much work each side did, whatever share
of the cores it got (more processes get more of a loaded machine). Runs alternate gensis, lightly, lightly,
gensis ... (``--reps`` pairs) in one process so that load from other processes hits both alike; the machine's
load is printed. Before them, ``--warmup`` (1) untimed 2-step runs of each side pay the process's one-off costs.

gensis on a CPU whose torch threads leave a core free (``--threads 1`` on 2 cores) uses a helper thread
(``gensis.train.overlap``: next batch's crops, teacher forward, half of the backbone's backward), as lightly's
loop uses its DataLoader worker processes; the CPU time columns include both.

The precision each side actually ran in is checked, not assumed: the dtype of the Linear layers' outputs in its
first steps (``_timing.PrecisionProbe``) and, for gensis, ``use_bf16`` of the ``train.amp`` its run folder's
config.yaml holds. Either differing from what was asked stops the benchmark (exit status 1) before any ratio
is printed: until commit d54810f ``train.amp=off`` ran bf16 on this kind of CPU, and this benchmark reported a
bf16 gensis against an fp32 lightly as fp32 against fp32.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _lightly_methods import LightlyStep  # noqa: E402
from _timing import PrecisionProbe, load_line, require_precision  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measured(fn, side: str, want: str) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, CPU seconds of the calling thread) of one call of ``fn``, which must run its
    matrix multiplies in ``want`` ('fp32' or 'bf16'; observed with ``PrecisionProbe``, the benchmark stops
    otherwise). The calling thread is the one that trains on both sides: the rest of the CPU time is lightly's
    DataLoader workers or gensis's helper thread, work that can run on another core."""
    c0, t0, m0 = cpu_seconds(), time.perf_counter(), time.thread_time()
    with PrecisionProbe() as probe:
        fn()
    wall, cpu, main = time.perf_counter() - t0, cpu_seconds() - c0, time.thread_time() - m0
    require_precision(side, probe.name, want)
    return wall, cpu, main


class PILImages(Dataset):
    """The images of a gensis ImageSet as (PIL image → transform, 0), like a torchvision dataset."""

    def __init__(self, ds, transform):
        self.ds, self.transform = ds, transform

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.ds.get(i))), 0


PRECISION = {"off": "fp32", "bf16": "bf16"}  # --gensis-amp → what gensis must run in


def overrides_for(method: str, steps: int, batch: int, threads: int | None = None, amp: str = "off") -> list[str]:
    return [f"method={method}", f"data.limit={steps * batch}", "optim.epochs=1", f"train.amp={amp}",
            "train.device=cpu", *([f"train.threads={threads}"] if threads else [])]


def gensis_setting(run_dir: str) -> str:
    """What gensis's own precision choice (``use_bf16``) makes of the ``train.amp`` its run recorded."""
    import torch

    from gensis.config import load_yaml
    from gensis.device import use_bf16

    with open(os.path.join(run_dir, "config.yaml")) as f:
        amp = load_yaml(f.read())["train"]["amp"]  # 'off' comes back as the boolean False (YAML 1.1)
    return "bf16" if use_bf16(torch.device("cpu"), amp) else "fp32"


def run_gensis(method: str, args, batch: int) -> tuple[float, float, float]:
    import gensis

    want = PRECISION[args.gensis_amp]
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        ov = overrides_for(method, args.steps, batch, args.threads, args.gensis_amp)
        out = measured(lambda: gensis.pretrain(args.data, run, preset=args.preset, overrides=ov, quiet=True),
                       "gensis", want)
        require_precision("gensis (its config's train.amp through use_bf16)", gensis_setting(run), want)
    return out


def one_thread(fn):
    """``fn()`` with gensis's helper thread off (``GENSIS_OVERLAP=off``), the variable restored after."""
    old = os.environ.get("GENSIS_OVERLAP")
    os.environ["GENSIS_OVERLAP"] = "off"
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["GENSIS_OVERLAP"]
        else:
            os.environ["GENSIS_OVERLAP"] = old


def run_lightly(method: str, args, cfg: dict) -> tuple[float, float, float]:
    return measured(lambda: lightly_training(method, args, cfg), "lightly", "fp32")


def lightly_training(method: str, args, cfg: dict) -> None:
    from lightly.transforms import DINOTransform

    from gensis.data.sources import open_data
    from gensis.models.backbone import build_backbone

    a, size, batch = cfg["aug"], cfg["data"]["image_size"], cfg["optim"]["batch_size"]
    n_local = 0 if method == "simclr" else int(a["n_local"])
    torch.manual_seed(cfg["train"]["seed"])
    ds = open_data(args.data, "train", cfg["data"]["val_fraction"], cfg["data"]["split_seed"], cfg["data"]["limit"])
    transform = DINOTransform(global_crop_size=size, global_crop_scale=tuple(a["global_scale"]),
                              local_crop_size=a["local_size"], local_crop_scale=tuple(a["local_scale"]),
                              n_local_views=n_local)
    loader = DataLoader(PILImages(ds, transform), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=args.workers)
    vit = build_backbone(cfg["model"], size)
    step = LightlyStep(method, cfg, vit, batched=args.lightly_batched, lr=cfg["optim"]["lr"])
    n = 0
    while n < args.steps:
        for views, _ in loader:
            step.step(views)
            n += 1
            if n == args.steps:
                break
    del loader  # workers end (their CPU time is counted once they are reaped)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="dino", help="comma-separated: dino, ibot, dinov2, simclr")
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--data", default="builtin:animal-mnist")
    ap.add_argument("--steps", type=int, default=40, help="training steps of each run")
    ap.add_argument("--reps", type=int, default=2, help="pairs of runs (gensis, lightly), alternating order")
    ap.add_argument("--one-thread-too", action="store_true",
                    help="a third side in the rotation: gensis with GENSIS_OVERLAP=off (no helper thread), to see "
                    "what the helper thread gives on this machine now")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed 2-step runs of each side (lightly, gensis) before the timed ones (default 1): the "
                    "process's one-off costs (first use of a kernel, lazily loaded code) are paid by neither side's "
                    "timed runs (without it the first timed run, gensis's, pays them)")
    ap.add_argument("--workers", type=int, default=2, help="lightly's DataLoader worker processes")
    ap.add_argument("--lightly-batched", action="store_true",
                    help="lightly side: one backbone call per crop size (gensis's batching) instead of per view")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the training process, both sides "
                    "(default: torch's; lightly's workers use 1 each, as torch sets it in DataLoader workers)")
    ap.add_argument("--gensis-amp", choices=sorted(PRECISION), default="off",
                    help="gensis's train.amp: off (fp32, as lightly; the default) or bf16 (autocast, gensis's "
                    "default on CPUs with AMX or AVX512-BF16; lightly stays fp32)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from gensis.config import load_config

    import gensis.ssl.methods as methods  # imports before any timing: each side's first run would pay them
    import gensis.ssl.train  # noqa: F401
    import lightly.loss  # noqa: F401
    import lightly.models.modules  # noqa: F401
    import lightly.transforms  # noqa: F401

    for m in args.methods.split(","):
        methods.method_class(m)
    print(f"torch threads {torch.get_num_threads()}, precision gensis {PRECISION[args.gensis_amp]} "
          f"(train.amp={args.gensis_amp}) / lightly fp32, each checked after every run; {load_line()}")
    results = {}
    for method in args.methods.split(","):
        cfg0 = load_config("pretrain", args.preset, [f"method={method}"])
        batch = cfg0["optim"]["batch_size"]
        cfg = load_config("pretrain", args.preset,
                          overrides_for(method, args.steps, batch, args.threads, args.gensis_amp))
        sides = ["gensis", "lightly"] + (["gensis-1thread"] if args.one_thread_too else [])
        times: dict[str, list[float]] = {k: [] for k in sides}
        cpu: dict[str, list[float]] = {k: [] for k in sides}
        mains: dict[str, list[float]] = {k: [] for k in sides}
        run = {"gensis": lambda: run_gensis(method, args, batch), "lightly": lambda: run_lightly(method, args, cfg),
               "gensis-1thread": lambda: one_thread(lambda: run_gensis(method, args, batch))}
        if args.warmup:
            short = argparse.Namespace(**{**vars(args), "steps": 2})
            cfg_short = load_config("pretrain", args.preset,
                                    overrides_for(method, 2, batch, args.threads, args.gensis_amp))
            for _ in range(args.warmup):
                run_lightly(method, short, cfg_short)
                run_gensis(method, short, batch)
            print(f"  {method}: {args.warmup} untimed 2-step run(s) of each side first", flush=True)
        for r in range(args.reps):
            for side in (sides if r % 2 == 0 else sides[::-1]):
                wall, cpu_s, main_s = run[side]()
                mains[side].append(main_s)
                times[side].append(wall)
                cpu[side].append(cpu_s)
                prec = "fp32" if side == "lightly" else PRECISION[args.gensis_amp]  # checked by measured()
                print(f"  {method} {side} ({prec}): {wall:.1f} s ({args.steps * batch / wall:.1f} images/s), "
                      f"CPU {cpu_s:.1f} s ({1000 * cpu_s / (args.steps * batch):.0f} CPU-ms/image; training thread {main_s:.1f} s)  [{load_line()}]",
                      flush=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        med_main = {k: statistics.median(v) for k, v in mains.items()}
        results[method] = med["lightly"] / med["gensis"]
        print(f"{method}: {cfg['model']['arch']} depth {cfg['model']['depth']}, 2x{cfg['data']['image_size']}px + "
              f"{0 if method == 'simclr' else cfg['aug']['n_local']}x{cfg['aug']['local_size']}px, batch {batch}, "
              f"{args.steps} steps, gensis {PRECISION[args.gensis_amp]} / lightly fp32; median s gensis "
              f"{med['gensis']:.1f} / lightly {med['lightly']:.1f}; "
              f"images/s {args.steps * batch / med['gensis']:.1f} / {args.steps * batch / med['lightly']:.1f}; "
              f"speedup gensis/lightly {results[method]:.2f}x; CPU s per run {med_cpu['gensis']:.1f} / "
              f"{med_cpu['lightly']:.1f} (CPU ratio lightly/gensis {med_cpu['lightly'] / med_cpu['gensis']:.2f}); training thread's CPU s "
              f"{med_main['gensis']:.1f} / {med_main['lightly']:.1f} (ratio {med_main['lightly'] / med_main['gensis']:.2f}: "
              f"the speedup on 2 idle cores if the other threads and processes keep up on the second one)",
              flush=True)
        if args.one_thread_too:
            m1 = "gensis-1thread"
            print(f"{method}: gensis without its helper thread (GENSIS_OVERLAP=off): median s {med[m1]:.1f}, speedup "
                  f"{med['lightly'] / med[m1]:.2f}x, CPU ratio {med_cpu['lightly'] / med_cpu[m1]:.2f}", flush=True)
    print(f"\nspeedup (gensis {PRECISION[args.gensis_amp]} images/s ÷ lightly fp32 images/s): "
          + ", ".join(f"{m} {s:.2f}x" for m, s in results.items()) + f"   [{load_line()}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
