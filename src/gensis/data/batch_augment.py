"""DINO's multi-crop recipe applied to a whole batch at once, on the training device.

Per-sample PIL/v2 pipelines cost ~4 ms per image for 2+4 crops on one CPU core, slower than a small ViT
trains; here every operation draws its random parameters per sample and runs vectorized over the batch
(the same recipe as ``transforms.DINOAugmentation``, which stays the readable reference):

    RandomResizedCrop   area ∈ U(scale), log-aspect ∈ U(log 3/4, log 4/3), 10 tries then whole image;
                        resampled bilinearly with ``roi_align`` (DINO: bicubic)
    horizontal flip     p = 0.5
    color jitter        p = 0.8; brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, in one random order
                        per batch (torchvision: per image); hue is a rotation in YIQ space
    grayscale           p = 0.2
    Gaussian blur       p per view (1.0 / 0.1 / 0.5), σ ∈ U(0.1, 2.0)·size/224, kernel 23·size/224
    solarization        p = 0.2 on the second global view only
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from gensis.data.transforms import MEAN, STD, MultiCropConfig

_GRAY = torch.tensor([0.299, 0.587, 0.114])
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)
_CONST: dict[tuple[str, torch.device], torch.Tensor] = {}


def _const(name: str, device) -> torch.Tensor:
    """A module constant on ``device``, copied there once: a blocking host→GPU copy inside every view would
    stall the CPU until the GPU has drained its queue (a host sync per call)."""
    device = torch.device(device)
    key = (name, device)
    t = _CONST.get(key)
    if t is None:
        src = {"gray": _GRAY, "rgb2yiq": _RGB2YIQ, "yiq2rgb": _YIQ2RGB,
               "mean": torch.tensor(MEAN).view(1, 3, 1, 1), "std": torch.tensor(STD).view(1, 3, 1, 1)}[name]
        t = _CONST[key] = src.to(device)
    return t


def _u(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def random_resized_boxes(n: int, h: int, w: int, scale: tuple[float, float], g: torch.Generator,
                         device, ratio=(3 / 4, 4 / 3), tries: int = 10) -> torch.Tensor:
    """(n, 4) boxes x0, y0, x1, y1 following torchvision's RandomResizedCrop.get_params."""
    area = h * w
    s = _u(n * tries, *scale, g, device).view(n, tries) * area
    logr = _u(n * tries, math.log(ratio[0]), math.log(ratio[1]), g, device).view(n, tries)
    r = torch.exp(logr)
    cw = torch.sqrt(s * r).round()
    ch = torch.sqrt(s / r).round()
    ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1, device=device))
    idx = first.clamp(min=0)
    cw = cw.gather(1, idx[:, None])[:, 0]
    ch = ch.gather(1, idx[:, None])[:, 0]
    fallback = first < 0
    cw = torch.where(fallback, torch.full_like(cw, float(w)), cw)
    ch = torch.where(fallback, torch.full_like(ch, float(h)), ch)
    x0 = torch.floor(torch.rand(n, generator=g, device=device) * (w - cw + 1))
    y0 = torch.floor(torch.rand(n, generator=g, device=device) * (h - ch + 1))
    return torch.stack([x0, y0, x0 + cw, y0 + ch], 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (x * _const("gray", x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)  # (B, 1, H, W)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (f.view(-1, 1, 1, 1) * a + (1 - f.view(-1, 1, 1, 1)) * b).clamp(0, 1)


def _hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate chroma in YIQ by 2π·shift (shift ∈ [-0.5, 0.5]); (B, 3, H, W)."""
    th = 2 * math.pi * shift
    c, s = torch.cos(th), torch.sin(th)
    rot = torch.zeros(len(x), 3, 3, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    m = _const("yiq2rgb", x.device) @ rot @ _const("rgb2yiq", x.device)  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x).clamp(0, 1)


def color_jitter(x: torch.Tensor, p: float, strength: float, g: torch.Generator,
                 order_g: torch.Generator | None = None) -> torch.Tensor:
    """``g`` draws the per-sample factors on x's device; ``order_g`` (a CPU generator; default ``g``) the order
    of the four operations, which Python needs on the host: drawing it on a GPU would cost a host sync."""
    n, dev = len(x), x.device
    apply = (torch.rand(n, generator=g, device=dev) < p).float()
    b, c, s, hue = 0.4 * strength, 0.4 * strength, 0.2 * strength, 0.1 * strength
    one = torch.ones(n, device=dev)
    fb = torch.lerp(one, _u(n, 1 - b, 1 + b, g, dev), apply)
    fc = torch.lerp(one, _u(n, 1 - c, 1 + c, g, dev), apply)
    fs = torch.lerp(one, _u(n, 1 - s, 1 + s, g, dev), apply)
    fh = _u(n, -hue, hue, g, dev) * apply
    og = g if order_g is None else order_g
    for op in torch.randperm(4, generator=og, device=og.device).tolist():
        if op == 0:
            x = (x * fb.view(-1, 1, 1, 1)).clamp(0, 1)
        elif op == 1:
            x = _blend(x, _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), fc)
        elif op == 2:
            x = _blend(x, _gray(x).expand_as(x), fs)
        elif hue > 0:
            x = _hue(x, fh)
    return x


def gaussian_blur(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    size = min(h, w)
    k = max(3, int(round(23 * size / 224)) | 1)
    lo, hi = 0.1 * max(size / 224, 0.25), 2.0 * max(size / 224, 0.25)
    sigma = _u(n, lo, hi, g, x.device)
    apply = torch.rand(n, generator=g, device=x.device) < p
    r = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    ker = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    ker = ker / ker.sum(1, keepdim=True)  # (B, k)
    ker = ker[:, None].expand(n, 3, k).reshape(n * 3, k)  # (B*3, k): one kernel per channel
    y = x.reshape(1, n * 3, h, w)
    y = F.pad(y, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, ker.view(n * 3, 1, 1, k), groups=n * 3)
    y = F.conv2d(y, ker.view(n * 3, 1, k, 1), groups=n * 3).view(n, 3, h, w)
    return torch.where(apply.view(-1, 1, 1, 1), y, x)


class BatchDINOAugmentation:
    """(B, 3, H, W) uint8 batch → list of 2 + n_local normalized float crops (B, 3, s, s), globals first."""

    def __init__(self, cfg: MultiCropConfig, seed: int = 0, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.g = torch.Generator(device=self.device)
        self.g.manual_seed(seed)
        # the colour-jitter order is consumed by Python, so it is drawn on the host; on the CPU from the same
        # generator (results unchanged), on a GPU from a second, CPU generator (no host sync per view)
        self.order_g = self.g if self.device.type == "cpu" else torch.Generator().manual_seed(seed)

    def state(self) -> torch.Tensor:
        """Both generators' states as one uint8 tensor (just ``g``'s on the CPU)."""
        if self.order_g is self.g:
            return self.g.get_state()
        return torch.cat([self.g.get_state(), self.order_g.get_state()])

    def set_state(self, s: torch.Tensor) -> None:
        if self.order_g is self.g:
            self.g.set_state(s)
            return
        n = len(self.g.get_state())
        self.g.set_state(s[:n].clone())
        self.order_g.set_state(s[n:].clone())

    def view(self, x: torch.Tensor, size: int, scale, blur_p: float, solarize_p: float = 0.0) -> torch.Tensor:
        """One view per image of the float batch x ∈ [0, 1]."""
        n, _, h, w = x.shape
        g = self.g
        boxes = random_resized_boxes(n, h, w, scale, g, x.device)
        rois = torch.cat([torch.arange(n, device=x.device, dtype=x.dtype)[:, None], boxes.to(x.dtype)], 1)
        y = roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
        flip = torch.rand(n, generator=g, device=x.device) < 0.5
        y = torch.where(flip.view(-1, 1, 1, 1), y.flip(-1), y)
        y = color_jitter(y, 0.8, self.cfg.jitter, g, self.order_g)
        gray = torch.rand(n, generator=g, device=x.device) < 0.2
        y = torch.where(gray.view(-1, 1, 1, 1), _gray(y).expand_as(y), y)
        y = gaussian_blur(y, blur_p, g)
        if solarize_p > 0:
            sol = torch.rand(n, generator=g, device=x.device) < solarize_p
            y = torch.where(sol.view(-1, 1, 1, 1) & (y >= 0.5), 1 - y, y)
        return normalize(y)

    def global_views(self, x: torch.Tensor) -> list[torch.Tensor]:
        c = self.cfg
        return [self.view(x, c.global_size, c.global_scale, 1.0),
                self.view(x, c.global_size, c.global_scale, 0.1, c.solarize)]

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = to_float(images, self.device)
        c = self.cfg
        return self.global_views(x) + [self.view(x, c.local_size, c.local_scale, 0.5) for _ in range(c.n_local)]


def to_float(images: torch.Tensor, device) -> torch.Tensor:
    return images.to(device, non_blocking=True).float().div_(255)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - _const("mean", x.device)) / _const("std", x.device)
