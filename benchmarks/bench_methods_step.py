"""One training step of every registered method (dino, ibot, dinov2, simclr) in gensis against the same
step written with lightly 1.6.0's heads and losses, on the same timm ViT and the same crops, in one run.

    python benchmarks/bench_methods_step.py                          # demo preset, every method, 6 reps
    python benchmarks/bench_methods_step.py --methods dino,simclr --reps 10 --threads 1

gensis: the real ``PretrainTask`` (``gensis.ssl.train``) of the preset with ``method=NAME``, its step as the
loop runs it (schedules, block masks, teacher + student forward, method loss, backward, gradient clipping,
last-layer freeze, AdamW, EMA), on one fixed batch whose crops are made once (the augmentation is not timed).
lightly: ``_lightly_methods.LightlyStep`` on a copy of the same initial ViT and the same crops, with one
backbone call per crop size as gensis (``batched``), so that the comparison is of heads, losses, masking and
update: DINOProjectionHead + DINOLoss (dino); MaskedVisionTransformerTIMM + DINOProjectionHead + DINOLoss +
IBOTPatchLoss (ibot; + KoLeoLoss for dinov2); SimCLRProjectionHead + NTXentLoss (simclr). Both sides draw
block masks every step (gensis: the method's own sampler; lightly: ``random_block_mask``).

Repetitions are interleaved (gensis, lightly, lightly, gensis ...) so that load from other processes hits
both alike; medians are turned into images/s (images of the batch per second, all crops included) and the
ratios gensis time / lightly time and speedup (lightly time / gensis time) are printed per method. fp32 on
both sides (``--gensis-amp bf16``: gensis in bf16 autocast, its default on CPUs with AMX or AVX512-BF16, against
lightly in fp32, labelled so). The precision each side ran in is checked on its first (untimed) step: the
dtype of its Linear layers' outputs (``_timing.PrecisionProbe``) and gensis's own ``Runtime.bf16``; a mismatch
stops the benchmark (exit status 1). Until commit d54810f ``train.amp=off`` ran bf16 on CPUs with AVX512-BF16
and this benchmark compared a bf16 gensis with an fp32 lightly while it said fp32.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from gensis.config import load_config  # noqa: E402
from gensis.ssl.methods import METHODS  # noqa: E402
from gensis.ssl.train import PretrainTask  # noqa: E402
from gensis.train.foreach import clip_gradients  # noqa: E402
from gensis.train.loop import Runtime  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _lightly_methods import LightlyStep  # noqa: E402
from _timing import PrecisionProbe, interleaved, load_line, median, require_precision, table  # noqa: E402

PRECISION = {"off": "fp32", "bf16": "bf16"}  # --gensis-amp → what gensis must run in


def gensis_step(task: PretrainTask, batch) -> callable:
    """The body of ``gensis.train.loop.fit`` for one iteration (without the NaN guard and the metrics row)."""
    params = [p for p in task.model.parameters() if p.requires_grad]

    def step() -> float:
        task.schedule(0, 0)
        loss, _ = task.step(task.model, task.prepare(batch), 0, 0)  # masks drawn, fixed crops
        task.optimizer.zero_grad(set_to_none=True)
        task.backward(loss)
        clip_gradients(params, task.clip_mode, task.clip_value)
        task.before_update(0)
        task.optimizer.step()
        task.after_update(0, 0)
        return float(loss.detach())
    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    ap.add_argument("--preset", default="demo", help="pretrain preset giving the ViT, heads, crops and batch")
    ap.add_argument("--data", default="builtin:animal-mnist", help="images the crops are made of")
    ap.add_argument("--batch-size", type=int, default=None, help="images per step (default: the preset's)")
    ap.add_argument("--reps", type=int, default=6, help="timed steps of each side")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps of each side first")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--gensis-amp", choices=sorted(PRECISION), default="off",
                    help="gensis's train.amp: off (fp32, as lightly; the default) or bf16 (autocast; lightly stays "
                    "fp32)")
    args = ap.parse_args(argv)
    want = PRECISION[args.gensis_amp]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"preset {args.preset}, device {args.device}, gensis {want} / lightly fp32 (checked), threads "
          f"{torch.get_num_threads()}, {args.reps} "
          f"interleaved reps, {load_line()}")
    summary = {}
    for method in args.methods.split(","):
        ov = [f"method={method}", f"train.amp={args.gensis_amp}", f"train.device={args.device}"]
        if args.batch_size:
            ov.append(f"optim.batch_size={args.batch_size}")
        if args.threads:
            ov.append(f"train.threads={args.threads}")
        cfg = load_config("pretrain", args.preset, ov)
        b = cfg["optim"]["batch_size"]
        cfg = load_config("pretrain", args.preset, ov + [f"data.limit={b}"])
        rt = Runtime.setup(cfg["train"])
        require_precision("gensis (Runtime.bf16)", "bf16" if rt.bf16 else "fp32", want)
        task = PretrainTask(cfg, args.data, rt)
        images, idx = next(iter(task.loader.epoch(0)))
        crops = task.aug(images)  # made once: 2 global + n_local × (B, 3, s, s)
        task.aug = lambda _images, _c=crops: _c  # the timed steps reuse them (augmentation not timed)
        vit = copy.deepcopy(task.method.student.backbone)  # same initial weights
        theirs = LightlyStep(method, cfg, vit, batched=True, lr=cfg["optim"]["lr"])
        views = [c for c in crops[:task.spec.n_global + task.spec.n_local]]
        ours = gensis_step(task, (images, idx))
        with PrecisionProbe() as p0:
            l0 = ours()
        with PrecisionProbe() as p1:
            l1 = theirs.step(views)
        require_precision("gensis", p0.name, want)
        require_precision("lightly", p1.name, "fp32")
        sizes = sorted({c.shape[-1] for c in views}, reverse=True)
        print(f"\n== {method} (gensis {p0.name}, lightly {p1.name}): {cfg['model']['arch']} depth "
              f"{cfg['model']['depth']} dim {vit.embed_dim}, "
              f"views {len(views)} ({'/'.join(map(str, sizes))} px), batch {b}; first loss gensis {l0:.4f}, "
              f"lightly {l1:.4f} (different heads' initialisation and loss definitions: not expected equal)")
        cpu: dict[str, list[float]] = {}
        times = interleaved({"gensis": ours, "lightly": lambda: theirs.step(views)}, args.reps, args.warmup,
                            rt.device, cpu)
        summary[method] = (median(times["gensis"]), median(times["lightly"]), median(cpu["gensis"]),
                           median(cpu["lightly"]))
        table(f"{method}: one training step", times, b)
        print(f"CPU ms per step (this process, all threads): gensis {1000 * summary[method][2]:.1f}, lightly "
              f"{1000 * summary[method][3]:.1f}")
    print(f"\nsummary, gensis {want} / lightly fp32 ({load_line()})")
    print(f"{'method':8}{'gensis ms':>11}{'lightly ms':>12}{'time ratio':>12}{'speedup':>9}{'CPU speedup':>13}")
    for m, (g, t, gc, tc) in summary.items():
        print(f"{m:8}{1000 * g:11.1f}{1000 * t:12.1f}{g / t:12.3f}{t / g:9.2f}{tc / gc:13.2f}")
    print("(time ratio: gensis time / lightly time; speedup: lightly time / gensis time, from median wall time; "
          "CPU speedup: the same from median CPU time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
