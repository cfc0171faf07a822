"""Where a DINO run's head stands: are its teacher targets sharp, balanced, and can the student follow them?

    python benchmarks/dino_head_stats.py RUN [RUN ...] [--data SPEC] [--n 256]

For each DINO pretraining run (its checkpoint.safetensors) and n images of a gensis data spec (every 16th image), resized to the run's image size and normalised as the loaders do, prints for the teacher and the
student network:

- H(target): mean entropy of the teacher targets softmax((g(x) − c) / τ_t) (nats; 0 = one-hot, ln K = uniform);
- H(mean): entropy of their batch mean (ln K = every prototype used alike; low = a few prototypes take all);
- used: how many prototypes are some image's argmax;
- logit std: std over the K prototypes of g(x), mean over images (cosine logits of the l2-normalised bottleneck:
  with τ_s = 0.1 the student's distribution can be no sharper than this std / τ_s allows);
- cls-cos / bottleneck-cos: mean cosine similarity between different images' CLS features / bottleneck vectors.

An experiment, not a test (docs/pretrain.md, "A further sweep (2026-11-30, session 6)").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from gensis.configs.added import added_keys
from gensis.data.sources import open_data
from gensis.ssl.methods import build_method

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def images(spec: str, n: int, size: int) -> torch.Tensor:
    x = open_data(spec).stack()[::16][:n]  # (n, H, W, 3) uint8
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255  # (n, 3, H, W)
    t = F.interpolate(t, size=size, mode="bilinear", antialias=True)
    return (t - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def off_diagonal_mean(z: torch.Tensor) -> float:
    z = F.normalize(z, dim=-1)
    sim = z @ z.T  # (N, N)
    return sim[~torch.eye(len(z), dtype=torch.bool)].mean().item()


@torch.no_grad()
def stats(run: Path, data: str, n: int, temp: float) -> None:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    if cfg.get("method", "dino") != "dino":
        raise SystemExit(f"{run}: a {cfg['method']} run; this script reads DINO runs only")
    for key, old in added_keys("pretrain").items():  # a run made before a key existed ran at its old value
        section, name = key.split(".")
        cfg.setdefault(section, {}).setdefault(name, old)
    method = build_method(cfg)
    state = load_file(str(run / "checkpoint.safetensors"))
    own = method.state_dict()
    method.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    method.eval()
    x = images(data, n, cfg["data"]["image_size"])
    for name, net in (("teacher", method.teacher), ("student", method.student)):
        cls = net.backbone.forward_features(x)[:, 0]  # (N, D) CLS token
        logits = net.head(cls)  # (N, K)
        p = method.dino_loss.teacher_probs(logits, temp)  # (N, K)
        h = -(p * p.clamp_min(1e-12).log()).sum(-1).mean().item()
        pm = p.mean(0)
        hm = -(pm * pm.clamp_min(1e-12).log()).sum().item()
        print(f"{run.name} {name}: H(target) {h:.2f}  H(mean) {hm:.2f}  (ln K {np.log(logits.shape[1]):.2f})  "
              f"used {p.argmax(1).unique().numel()}  logit std {logits.std(1).mean():.3f}  "
              f"cls-cos {off_diagonal_mean(cls):.3f}  bottleneck-cos {off_diagonal_mean(net.head.mlp(cls)):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", default="/tmp/gensis-sweep/cifar-dev.npz", help="gensis data spec (.npz, folder, builtin:...)")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--teacher-temp", type=float, default=0.04)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for run in args.runs:
        stats(run, args.data, args.n, args.teacher_temp)


if __name__ == "__main__":
    main()
