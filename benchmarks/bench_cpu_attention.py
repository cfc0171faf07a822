"""Fused vs explicit attention for ViTs trained on the CPU: whole pretraining steps, and the attention alone.

timm's attention blocks compute softmax(q·kᵀ/√d)·v either with torch's fused ``scaled_dot_product_attention``
(its flash attention for CPU) or explicitly (matmul, softmax, matmul); ``gensis.models.backbone.
set_fused_attention`` picks one, and pretraining on the CPU uses the explicit form
(``fused_attention_for_training``). This script measures that choice.

    python benchmarks/bench_cpu_attention.py                         # demo preset: dino + pixel steps, bf16 and fp32
    python benchmarks/bench_cpu_attention.py --variants dino,pixel,gen --reps 20
    python benchmarks/bench_cpu_attention.py --preset histo-cpu --amp auto
    python benchmarks/bench_cpu_attention.py --grid                  # the attention alone, over sequence lengths

Steps: two ``PretrainTask``s of the preset (``--variants``: ``dino``; ``pixel``, the pixel-interpolation
ablation; ``gen``, Gen-DINO with a bank of ``gensis.bank.fake.FakeGenerator`` images, as fast to read as a real
bank), built with the same seed on the first ``--limit`` images: one with fused, one with explicit attention.
Each timed call is one whole training iteration as ``gensis.train.loop.fit`` runs it (augmentation, Gen- views,
teacher and student forward, loss, backward, clipping, AdamW, EMA). Iterations alternate A B, B A ... so
that load from other processes hits both alike; the table gives the median wall and CPU milliseconds (this
process, all its threads) and the ratio explicit/fused (< 1: explicit is faster). On a machine shared with
other jobs the CPU-time ratio is the steadier one. The first-iteration losses of both tasks are printed: same
weights, same batch and random draws, so they differ by rounding only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import interleaved, load_line, median  # noqa: E402

from gensis.config import load_config  # noqa: E402
from gensis.models.backbone import set_fused_attention  # noqa: E402
from gensis.ssl.train import PretrainTask  # noqa: E402
from gensis.train.foreach import clip_gradients  # noqa: E402
from gensis.train.loop import Runtime  # noqa: E402

DATA = "builtin:animal-mnist"


def fake_bank(folder: str, preset: str, limit: int) -> str:
    """A bank of FakeGenerator images for the first ``limit`` training images (as the real one is laid out)."""
    params = os.path.join(folder, "fake.json")
    size = load_config("pretrain", preset)["data"]["image_size"]
    with open(params, "w") as f:
        f.write(f'{{"image_size": {size}, "dim": 8}}')
    out = os.path.join(folder, "bank")
    subprocess.run([sys.executable, "-m", "gensis.cli.main", "bank", "generate", "--generator",
                    "gensis.bank.fake:FakeGenerator", "--eldm", params, "--data", DATA, "--out", out,
                    "--preset", preset, f"data.limit={limit}", "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return out


class Trainer:
    """One pretraining task and the iteration ``fit`` runs on it (on its own batches, in order)."""

    def __init__(self, preset: str, variant: str, overrides: list[str], bank: str | None, fused: bool):
        ov = list(overrides) + {"dino": [], "pixel": ["gen.interp=pixel"], "gen": ["gen.interp=bank"]}[variant]
        cfg = load_config("pretrain", preset, ov)
        rt = Runtime.setup(cfg["train"])  # seeds every global generator: both tasks start alike
        self.task = PretrainTask(cfg, DATA, rt, bank if variant == "gen" else None)
        set_fused_attention(self.task.method, fused)
        self.params = [p for p in self.task.model.parameters() if p.requires_grad]
        self.batches = list(self.task.loader.epoch(0))
        self.it = 0
        self.first_loss: float | None = None

    def __call__(self) -> None:
        t, i = self.task, self.it
        t.schedule(i, 0)
        loss, _ = t.step(t.model, t.prepare(self.batches[i % len(self.batches)]), i, 0)
        t.optimizer.zero_grad(set_to_none=True)
        t.backward(loss)
        clip_gradients(self.params, t.clip_mode, t.clip_value)
        t.before_update(0)
        t.optimizer.step()
        t.after_update(i, 0)
        if self.first_loss is None:
            self.first_loss = float(loss.detach())
        self.it += 1


def steps(a: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="bench-attn-")
    bank = fake_bank(tmp, a.preset, a.limit) if "gen" in a.variants else None
    print(f"preset {a.preset}, {a.limit} images, threads {torch.get_num_threads()}; {load_line()}")
    print(f"{'variant':8}{'amp':6}{'fused ms':>10}{'explicit ms':>13}{'wall ratio':>12}{'fused cpu':>11}"
          f"{'explicit cpu':>14}{'cpu ratio':>11}   first loss fused / explicit")
    for amp in a.amp:
        for variant in a.variants:
            ov = [f"data.limit={a.limit}", f"train.amp={amp}", *a.override]
            runs = {"fused": Trainer(a.preset, variant, ov, bank, True),
                    "explicit": Trainer(a.preset, variant, ov, bank, False)}
            cpu: dict[str, list[float]] = {}
            wall = interleaved(runs, a.reps, a.warmup, cpu=cpu)
            w = {k: 1000 * median(v) for k, v in wall.items()}
            c = {k: 1000 * median(v) for k, v in cpu.items()}
            print(f"{variant:8}{amp:6}{w['fused']:10.1f}{w['explicit']:13.1f}{w['explicit'] / w['fused']:12.3f}"
                  f"{c['fused']:11.1f}{c['explicit']:14.1f}{c['explicit'] / c['fused']:11.3f}   "
                  f"{runs['fused'].first_loss:.6f} / {runs['explicit'].first_loss:.6f}", flush=True)


def grid(a: argparse.Namespace) -> None:
    """The attention alone (forward + backward), fused vs explicit, over sequence lengths."""
    import torch.nn.functional as F

    print(f"attention forward + backward, threads {torch.get_num_threads()}; {load_line()}")
    print(f"{'B':>4}{'heads':>6}{'tokens':>7}{'bf16':>6}{'fused ms':>10}{'explicit ms':>13}{'ratio':>7}")
    g = torch.Generator().manual_seed(0)
    for bf16 in (True, False):
        for b, n, h in [(128, 5, 3), (96, 17, 3), (64, 65, 3), (16, 197, 6), (8, 257, 6)]:
            q, k, v = (torch.randn(b, h, n, 64, generator=g, requires_grad=True) for _ in range(3))

            def run(fused: bool) -> None:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    if fused:
                        o = F.scaled_dot_product_attention(q, k, v)
                    else:
                        o = ((q * 64 ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v  # (B, h, N, 64)
                o.float().sum().backward()

            t = interleaved({"fused": lambda: run(True), "explicit": lambda: run(False)}, a.reps, a.warmup)
            f, e = 1000 * median(t["fused"]), 1000 * median(t["explicit"])
            print(f"{b:4}{h:6}{n:7}{str(bf16):>6}{f:10.2f}{e:13.2f}{e / f:7.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--variants", default="dino,pixel", type=lambda s: s.split(","))
    ap.add_argument("--amp", default="auto,off", type=lambda s: s.split(","), help="train.amp values (auto: bf16 "
                    "where the CPU has AMX or AVX512-BF16)")
    ap.add_argument("--limit", type=int, default=1024, help="training images (data.limit)")
    ap.add_argument("--reps", type=int, default=12, help="timed iterations of each")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--override", action="append", default=[], help="a pretrain config override KEY=VALUE")
    ap.add_argument("--grid", action="store_true", help="time the attention alone instead")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    grid(a) if a.grid else steps(a)


if __name__ == "__main__":
    main()
