"""Linear classifier on frozen features (DINO's linear protocol), with a learning-rate sweep.

Protocol (Caron et al., 2021, ``eval_linear.py``; Gen-SIS supplementary Sec. 9.5.4): a linear layer
(no batch norm) on the frozen backbone's CLS feature, trained with cross-entropy by SGD (momentum 0.9,
weight decay 0, cosine learning-rate decay to 0 over the epochs, batch 1024, lr scaled by batch/256);
train images get RandomResizedCrop + horizontal flip, test images a central view. The accuracy is
sensitive to the learning rate, so a sweep is run and the best top-1 is reported (as DINO's lr search;
Gen-SIS: "we perform a learning rate hyperparameter search").

Notation (code → protocol)
    F_c             train_feats[c]        features of augmented copy c of the train set, (K, N, D)
    W_h, b_h        weight[h], bias[h]    linear head h, (H, C, D) and (H, C); W ~ N(0, 0.01²), b = 0
    η_h             lrs[h] · B / 256      peak learning rate of head h
    η_h(e)          η_h · ½(1 + cos(π e / E))   cosine schedule, stepped per epoch (CosineAnnealingLR)

Steps
    1. test features: the image's short side resized to the encoder's input size, centre crop (``extract_features``)
    2. train features: K augmented copies (RandomResizedCrop(scale=(0.08, 1)) + flip), extracted once
    3. for each epoch e: shuffle the train set; batches of copy e mod K go through all H heads at once,
       loss = Σ_h CE(W_h x + b_h, y) (each head's gradient is its own mean CE), then per head
       v_h ← μ v_h + ∇_h,  W_h ← W_h − η_h(e) v_h          (torch's SGD with momentum μ, no dampening)
    4. top-1/top-5 of every head on the test features; the best head's top-1 is reported

Deviations from DINO, for CPU budgets
    - The backbone is run once per augmented copy (K copies, ``aug_copies``) instead of once per epoch:
      epoch e reuses copy e mod K. With K = epochs this is DINO's schedule; a few copies keep most of the
      augmentation's effect at a fraction of the cost.
    - All learning rates train in parallel as heads over the same features in one pass (as DINOv2's
      linear evaluation does); DINO runs one job per learning rate.
    - The feature is the final CLS token (``Encoder``'s "image batch → CLS embedding"); DINO concatenates
      the CLS tokens of the last 4 blocks for ViT-S (last block + pooled patch tokens for ViT-B).
    - Test view: short side resized to the input size, then the centre crop (DINO: resize to 256/224 of the
      size, then center crop); a square image is seen whole.
    - Crops are resampled bilinearly with ``roi_align`` (DINO: bicubic), in batches.
    - The reported accuracy is the final epoch's (DINO keeps the best over epochs on the test set).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass

from typing import TYPE_CHECKING

import numpy as np

from gensis.errors import UserError
from gensis.eval.common import (describe_data, describe_encoder, labels_of, no_grad, num_classes_of,
                                warn_if_test_is_train, warn_unseen_test_classes)

if TYPE_CHECKING:  # torch is imported where it is used, so `gensis eval --help` starts without it
    import torch

# learning rates at batch 256 (scaled by batch/256), half-decade steps around DINO's default 0.001; wider at
# the top than DINOv2's sweep (1e-5 … 0.1) because weak features (random, pixels) want large steps
DEFAULT_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


@dataclass
class LinearConfig:
    """Hyperparameters of the linear probe (DINO's ``eval_linear.py`` values unless noted)."""

    lrs: tuple[float, ...] = DEFAULT_LRS  # learning rates at batch 256, one head each
    epochs: int = 100
    batch_size: int = 1024
    momentum: float = 0.9
    weight_decay: float = 0.0
    aug_copies: int = 2  # augmented copies of the train set whose features are extracted (deviation)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range
    seed: int = 0

    def check(self) -> None:
        if not self.lrs or any(not (lr > 0) for lr in self.lrs):
            raise UserError(f"learning rates must be > 0, got {list(self.lrs)}")
        for name in ("epochs", "batch_size", "aug_copies"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        lo, hi = self.crop_scale
        if not (0 < lo <= hi <= 1):
            raise UserError(f"crop scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if not (0 <= self.momentum < 1) or self.weight_decay < 0:
            raise UserError("momentum must be in [0, 1) and weight decay >= 0")


# ---------------------------------------------------------------------------------------------------------
# step 2: features of augmented copies


def random_resized_crop_flip(images: torch.Tensor, size: int, scale: tuple[float, float],
                             g: torch.Generator) -> torch.Tensor:
    """uint8 (B, 3, H, W) → uint8 (B, 3, size, size): RandomResizedCrop(size, scale) + horizontal flip."""
    import torch
    from torchvision.ops import roi_align

    from gensis.data.batch_augment import random_resized_boxes

    n, _, h, w = images.shape
    x = images.float()  # (B, 3, H, W), 0..255
    boxes = random_resized_boxes(n, h, w, scale, g, "cpu")  # (B, 4) x0, y0, x1, y1
    rois = torch.cat([torch.arange(n, dtype=x.dtype)[:, None], boxes.to(x.dtype)], 1)  # (B, 5)
    y = roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)  # (B,3,s,s)
    flip = torch.rand(n, generator=g) < 0.5
    y = torch.where(flip.view(-1, 1, 1, 1), y.flip(-1), y)
    return y.round().clamp(0, 255).to(torch.uint8)


@no_grad
def augmented_features(encoder, ds, copies: int, scale: tuple[float, float] = (0.08, 1.0), seed: int = 0,
                       batch_size: int = 256, device: str | torch.device = "cpu") -> torch.Tensor:
    """(copies, N, D) float32 features of ``copies`` independently augmented versions of every image."""
    import torch

    from gensis.data.loader import ImageBatches, _is_array_backed
    from gensis.progress import progress

    encoder.to(device)
    batches = ImageBatches(ds, batch_size, shuffle=False, drop_last=False,
                           load_size=None if _is_array_backed(ds) else encoder.image_size)
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(copies, len(ds), encoder.dim)
    with progress(total=copies * len(batches), desc="augmented train features", leave=False) as bar:
        for c in range(copies):
            for images, idx in batches.epoch(0):
                crops = random_resized_crop_flip(images, encoder.image_size, scale, g)
                out[c, idx] = encoder(crops).float().cpu()  # (B, D)
                bar.update(1)
    return out


# ---------------------------------------------------------------------------------------------------------
# step 3-4: many linear heads at once


@dataclass
class HeadResult:
    lr: float  # at batch 256
    top1: float | None  # % on the test set; None when the head diverged
    top5: float | None
    diverged: bool = False
    final_loss: float | None = None


@contextlib.contextmanager
def _cpu_threads(n: int):
    """Run the block with at most ``n`` torch CPU threads."""
    import torch

    old = torch.get_num_threads()
    if n >= old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fit_linear_heads(train_feats: torch.Tensor, y_train: torch.Tensor, num_classes: int, cfg: LinearConfig,
                     show_progress: bool = True, device: str | torch.device = "cpu"
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 3: one linear head per learning rate of ``cfg.lrs``, trained on (K, N, D) or (N, D) features.

    Features stay where they are (CPU); each batch is moved to ``device``. On CPU, small heads (below
    ~67 M multiply-adds per step, e.g. 9 heads × 10 classes × 384-d × batch 1024) train on one thread:
    their matmuls are too small for threading to pay, and spinning OpenMP threads cost far more than they
    save when the cores are shared. Returns weight (H, C, D), bias (H, C) and each head's last loss (H,).
    """
    import torch

    if train_feats.ndim == 2:
        train_feats = train_feats[None]  # (1, N, D)
    device = torch.device(device)
    work = cfg.batch_size * len(cfg.lrs) * num_classes * train_feats.shape[-1]
    threads = 1 if device.type == "cpu" and work < 2**26 else torch.get_num_threads()
    with _cpu_threads(threads):
        return _fit(train_feats, y_train, num_classes, cfg, show_progress, device)


def _fit(train_feats, y_train, num_classes, cfg, show_progress, device):
    import torch
    import torch.nn.functional as F

    from gensis.progress import progress

    K, N, D = train_feats.shape
    H, C, B = len(cfg.lrs), num_classes, cfg.batch_size
    if device.type == "cuda" and train_feats.numel() * 4 < 2**31:
        # features and labels on the GPU once: a blocking host→device copy per batch would sync every step
        train_feats, y_train = train_feats.to(device), y_train.to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    weight = (torch.randn(H, C, D, generator=g) * 0.01).to(device).requires_grad_()  # (H, C, D), DINO's init
    bias = torch.zeros(H, C, device=device, requires_grad=True)  # (H, C)
    bufs = [torch.zeros_like(weight), torch.zeros_like(bias)]  # momentum buffers
    peak = torch.tensor(cfg.lrs, dtype=torch.float32, device=device) * B / 256  # (H,) linear scaling rule
    n_batches = -(-N // B)
    last_loss = torch.zeros(H, device=device)
    bar = progress(total=cfg.epochs * n_batches, desc="linear heads", leave=False, disable=not show_progress)
    for epoch in range(cfg.epochs):
        lr = peak * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))  # (H,) cosine, per epoch
        feats = train_feats[epoch % K]  # (N, D)
        perm = torch.randperm(N, generator=g).to(train_feats.device)
        for b in range(n_batches):
            idx = perm[b * B:(b + 1) * B]
            x, y = feats[idx].to(device), y_train[idx].to(device)  # (b, D), (b,)
            logits = torch.einsum("bd,hcd->hbc", x, weight) + bias[:, None, :]  # (H, b, C)
            per_head = F.cross_entropy(logits.reshape(-1, C), y.repeat(H), reduction="none").view(H, -1).mean(1)
            weight.grad = bias.grad = None
            per_head.sum().backward()  # head h's gradient = ∇ of its own mean CE
            with torch.no_grad():
                for p, buf in zip((weight, bias), bufs):
                    grad = p.grad if cfg.weight_decay == 0 else p.grad + cfg.weight_decay * p
                    buf.mul_(cfg.momentum).add_(grad)
                    p.sub_(lr.view(-1, *[1] * (p.ndim - 1)) * buf)
            last_loss = per_head.detach()
            bar.update(1)
    bar.close()
    return weight.detach(), bias.detach(), last_loss


@no_grad
def score_linear_heads(weight: torch.Tensor, bias: torch.Tensor, test_feats: torch.Tensor,
                       y_test: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 4: top-1 and top-5 accuracy (%) of every head, each (H,)."""
    import torch

    H, C, _ = weight.shape
    correct1 = torch.zeros(H, dtype=torch.long, device=weight.device)
    correct5 = torch.zeros(H, dtype=torch.long, device=weight.device)
    dev = weight.device
    for start in range(0, len(y_test), chunk):
        x, y = test_feats[start:start + chunk].to(dev), y_test[start:start + chunk].to(dev)  # (b, D), (b,)
        logits = torch.einsum("bd,hcd->hbc", x, weight) + bias[:, None, :]  # (H, b, C)
        hit = logits.topk(min(5, C), dim=-1).indices == y[None, :, None]  # (H, b, top)
        correct1 += hit[..., 0].sum(1)
        correct5 += hit.any(-1).sum(1)
    n = max(len(y_test), 1)
    return 100.0 * correct1.cpu().double() / n, 100.0 * correct5.cpu().double() / n


def train_linear_heads(train_feats: torch.Tensor, y_train: torch.Tensor, test_feats: torch.Tensor,
                       y_test: torch.Tensor, num_classes: int, cfg: LinearConfig,
                       show_progress: bool = True, device: str | torch.device = "cpu") -> list[HeadResult]:
    """Train one linear head per learning rate of ``cfg.lrs`` (steps 3-4); one result per head."""
    return _train_heads(train_feats, y_train, test_feats, y_test, num_classes, cfg, show_progress, device)[0]


def _train_heads(train_feats, y_train, test_feats, y_test, num_classes, cfg, show_progress, device):
    import torch

    weight, bias, last_loss = fit_linear_heads(train_feats, y_train, num_classes, cfg, show_progress, device)
    top1, top5 = score_linear_heads(weight, bias, test_feats, y_test)
    weight, bias, last_loss = weight.cpu(), bias.cpu(), last_loss.cpu()
    finite = torch.isfinite(weight).flatten(1).all(1) & torch.isfinite(bias).all(1) & torch.isfinite(last_loss)
    out = []
    for h, lr0 in enumerate(cfg.lrs):
        ok = bool(finite[h])
        out.append(HeadResult(float(lr0), float(top1[h]) if ok else None, float(top5[h]) if ok else None,
                              not ok, float(last_loss[h]) if ok else None))
    return out, weight, bias


def linear_eval(encoder, train_ds, test_ds, cfg: LinearConfig | None = None, device: str | torch.device = "cpu",
                batch_size: int = 256, test_features: np.ndarray | None = None, cache=None,
                return_heads: bool = False) -> dict:
    """DINO linear evaluation of a frozen ``encoder`` with a learning-rate sweep.

    Returns a JSON-ready dict: ``results`` (one row per learning rate: ``lr``, ``top1``, ``top5`` in %,
    ``diverged``), the best row's ``lr``/``top1``/``top5``, the config, and the identities of the encoder
    and both datasets. ``test_features`` (from ``extract_features``) skips the test extraction.
    ``return_heads``: return ``(result, (weight, bias))`` with the best head's (C, D) and (C,) parameters.
    """
    import torch

    from gensis.eval.features import extract_features

    cfg = cfg or LinearConfig()
    cfg.check()
    y_train, y_test = labels_of(train_ds, "train"), labels_of(test_ds, "test")
    warn_if_test_is_train(train_ds, test_ds)
    warn_unseen_test_classes(test_ds, y_train, y_test)
    num_classes = num_classes_of(train_ds, test_ds, y_train, y_test)
    t0 = time.time()
    f_test = test_features if test_features is not None else \
        extract_features(encoder, test_ds, batch_size, device, desc="test features", cache=cache)
    f_train = augmented_features(encoder, train_ds, cfg.aug_copies, cfg.crop_scale, cfg.seed, batch_size, device)
    t_feat = time.time() - t0
    heads, weight, bias = _train_heads(f_train, torch.from_numpy(y_train),
                                       torch.from_numpy(np.asarray(f_test)).float(), torch.from_numpy(y_test),
                                       num_classes, cfg, True, device)
    ok = [h for h in heads if not h.diverged]
    if not ok:
        raise UserError("every learning rate diverged; give smaller ones with --lrs")
    best = max(ok, key=lambda h: (h.top1, h.top5))
    config = asdict(cfg)
    config["lrs"], config["crop_scale"] = list(cfg.lrs), list(cfg.crop_scale)
    res = {
        "protocol": "linear",
        "encoder": describe_encoder(encoder),
        "train": describe_data(train_ds),
        "test": describe_data(test_ds),
        "config": config,
        "results": [asdict(h) for h in heads],
        "lr": best.lr, "top1": best.top1, "top5": best.top5,
        "seconds": {"features": round(t_feat, 2), "total": round(time.time() - t0, 2)},
    }
    if return_heads:  # the best head, (C, D) and (C,), for applying it elsewhere (robustness)
        h = heads.index(best)
        return res, (weight[h].clone(), bias[h].clone())
    return res


# ---------------------------------------------------------------------------------------------------------
# command line: gensis eval linear


def add_probe_arguments(p) -> None:
    d = LinearConfig()
    p.add_argument("--lrs", type=float, nargs="+", action="extend", default=None, metavar="LR",
                   help="learning rates to sweep, at batch 256 (scaled by batch-size/256, as DINO); repeating the "
                        "option adds values, a repeated value counts once (default: "
                        f"{' '.join(f'{lr:g}' for lr in d.lrs)})")
    p.add_argument("--epochs", type=int, default=d.epochs, metavar="N", help="training epochs of the linear heads")
    p.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N", help="SGD batch size of the linear heads")
    p.add_argument("--aug-copies", type=int, default=d.aug_copies, metavar="K",
                   help="augmented copies of the train set whose features are precomputed")
    p.add_argument("--crop-scale", type=float, nargs=2, default=list(d.crop_scale), metavar=("MIN", "MAX"),
                   help="area range of RandomResizedCrop on train images")
    p.add_argument("--momentum", type=float, default=d.momentum, metavar="M", help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, metavar="WD", help="SGD weight decay")
    p.add_argument("--seed", type=int, default=d.seed, metavar="SEED", help="seed of the augmentations, shuffling and head init")


def probe_config(args) -> LinearConfig:
    lrs = tuple(dict.fromkeys(args.lrs or DEFAULT_LRS))  # distinct, in the given order (head h's init is slice h)
    cfg = LinearConfig(lrs=lrs, epochs=args.epochs, batch_size=args.batch_size,
                       momentum=args.momentum, weight_decay=args.weight_decay, aug_copies=args.aug_copies,
                       crop_scale=tuple(args.crop_scale), seed=args.seed)
    cfg.check()
    return cfg


def _add_arguments(p) -> None:
    from gensis.eval.common import add_data_options
    from gensis.eval.options import add_encoder_options, add_runtime_options

    add_encoder_options(p)
    add_data_options(p)
    add_probe_arguments(p)
    add_runtime_options(p)


def _run(args) -> dict:
    from gensis.eval.common import prepare_classification

    cfg = probe_config(args)  # before the (slow) data and encoder loading
    encoder, train_ds, test_ds, device, cache = prepare_classification(args)
    return linear_eval(encoder, train_ds, test_ds, cfg, device=device, batch_size=args.feature_batch_size,
                       cache=cache)


def format_linear(res: dict) -> str:
    from gensis.eval.common import footer_lines, header_lines

    c = res["config"]
    epochs, copies = c["epochs"], c["aug_copies"]
    lines = header_lines(f"linear probe ({epochs} epoch{'s' * (epochs != 1)}, batch {c['batch_size']}, "
                         f"{copies} aug. cop{'ies' if copies != 1 else 'y'})", res)
    lines.append(f"{'lr':>8}  {'top-1':>7}  {'top-5':>7}")
    for r in res["results"]:
        if r["diverged"]:
            lines.append(f"{r['lr']:>8g}  {'diverged':>16}")
        else:
            lines.append(f"{r['lr']:>8g}  {r['top1']:7.2f}  {r['top5']:7.2f}")
    lines.append(f"best: lr {res['lr']:g}  top-1 {res['top1']:.2f}  top-5 {res['top5']:.2f}")
    return "\n".join(lines + footer_lines(res))


from gensis.eval.registry import Evaluation  # noqa: E402

EVALUATION = Evaluation(
    name="linear",
    summary="linear classifier on frozen features with a learning-rate sweep (DINO)",
    description="Linear probe (DINO): a linear layer on the frozen CLS feature, SGD (momentum 0.9, weight decay "
                "0, cosine lr), RandomResizedCrop + flip on train, the centre crop (short side resized; a square "
                "image whole) on test. All learning rates train at once as parallel heads; the best top-1 on the "
                "test set is reported (DINO's learning-rate search). Train features are extracted once for "
                "--aug-copies augmented copies of the train set (epoch e uses copy e mod K) instead of re-running "
                "the backbone every epoch.",
    add_arguments=_add_arguments, run=_run, format=format_linear,
    headline=lambda r: [(f"linear top-1 (lr {r['lr']:g})", r["top1"])],
    data_options=("train",),
)
