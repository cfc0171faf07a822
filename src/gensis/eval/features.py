"""The feature layer of every evaluation: frozen-encoder features of images and datasets, cached on disk.

Kinds (DINO's evaluation scripts):
    cls       the CLS token after the final norm, (D,)                        k-NN, linear, retrieval
    gem       GeM of the patch tokens, g = (mean_patches clamp(t, 1e-6)^p)^(1/p), p = 4, (D,)
    cls_gem   [cls ⊕ gem], (2D,): DINO's copy-detection descriptor (768-d for ViT-S)
    patch     the patch tokens, (h, w, D): dense tasks (video segmentation)

Input size (``FeatureSpec.size``, ``resize``): ``crop`` (the default: k-NN, linear, robustness, UMAP,
``gensis.embed``, the E-LDM's conditioning embeddings) resizes the short side to size and takes the centre
size × size crop, the geometry pretraining loads images with (DINO's eval transform, Resize + CenterCrop,
without its 256/224 margin, so a square image is resized exactly as before); ``square`` stretches to
size × size (DINO copy detection: 320 px); ``max`` keeps the aspect ratio with the longest side = size (PIL
``thumbnail``, DINO retrieval); ``none`` keeps the image (DAVIS). Sides are then rounded down to multiples
of the patch size (a ViT needs whole patches; timm interpolates the position embeddings). Resizing is
antialiased bilinear on uint8 tensors.

Multi-scale (DINO ``multi_scale``): the descriptor is averaged over the image rescaled by each factor of
``scales`` (DINO: 1, 1/√2, 1/2, bilinear); consumers L2-normalize it afterwards, as DINO does.

``dataset_features`` runs an encoder over an ``ImageSet`` in batches (images of equal target size are
batched together), with a progress bar, on the encoder's device, and caches the (N, D) result as
safetensors under ``FeatureCache`` keyed by (encoder identity, data identity, kind, size, resize,
scales, p), so later evaluations of the same encoder on the same data reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from gensis.data.sources import cache_key

KINDS = ("cls", "gem", "cls_gem", "patch")
RESIZES = ("crop", "square", "max", "none")
MULTISCALE = (1.0, 2 ** -0.5, 0.5)  # DINO's three scales


@dataclass(frozen=True)
class FeatureSpec:
    """Which feature, at which input size."""

    kind: str = "cls"
    size: int | None = None  # None: the encoder's own input size
    resize: str = "crop"  # short side + centre crop; the cache key holds it (stretched features of "square" differ)
    scales: tuple[float, ...] = (1.0,)
    gem_p: float = 4.0

    def __post_init__(self):
        from gensis.errors import UserError

        if self.kind not in KINDS:
            raise UserError(f"unknown feature kind '{self.kind}'; one of {', '.join(KINDS)}")
        if self.resize not in RESIZES:
            raise UserError(f"unknown resize '{self.resize}'; one of {', '.join(RESIZES)}")
        if self.size is not None and self.size < 1:
            raise UserError(f"the input size must be >= 1, got {self.size}")
        if not self.scales or any(not (0 < s <= 4) for s in self.scales):
            raise UserError(f"scales must be in (0, 4], got {list(self.scales)}")
        if self.kind == "patch" and tuple(self.scales) != (1.0,):
            raise UserError("patch tokens have no multi-scale average (their grids differ)")

    def key(self, encoder) -> dict:
        d = asdict(self)
        d["size"] = self.size or encoder.image_size
        d["scales"] = [round(float(s), 6) for s in self.scales]
        return d


def target_shape(h: int, w: int, spec: FeatureSpec, encoder) -> tuple[int, int]:
    """(H, W) an image of h × w is resized to before the encoder (multiples of the patch size)."""
    size = spec.size or encoder.image_size
    if encoder.model is None and spec.kind == "cls" and spec.resize != "none":
        return size, size  # raw pixels: a fixed-length vector needs a fixed size
    if spec.resize in ("square", "crop"):  # crop: the centre size × size crop (``fit`` resizes the short side)
        th, tw = size, size
    elif spec.resize == "max":
        # PIL thumbnail: the longest side becomes size (never enlarges), aspect ratio kept
        r = min(1.0, size / max(h, w))
        th, tw = max(1, round(h * r)), max(1, round(w * r))
    else:
        th, tw = h, w
    if encoder.model is None and spec.kind == "cls":
        return th, tw  # raw pixels: no patches to fit
    ps = encoder.patch_size
    return max(ps, th // ps * ps), max(ps, tw // ps * ps)


def _resize(x, hw: tuple[int, int]):
    from torchvision.transforms.v2 import functional as TF

    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return TF.resize(x, list(hw), antialias=True)


def fit(x, hw: tuple[int, int], spec: FeatureSpec):
    """(B, 3, h, w) → (B, 3, *hw) as ``spec.resize`` says: ``crop`` resizes a non-square image's short side and
    takes the centre crop (no stretching); otherwise a plain resize to ``hw``. A square image is resized
    bit-identically in every mode."""
    if spec.resize == "crop":
        from gensis.models.encoder import resize_center_crop

        return resize_center_crop(x, hw)
    return _resize(x, hw)


def gem(patches, p: float = 4.0):
    """GeM pooling of (B, h, w, D) patch tokens → (B, D): (mean clamp(t, 1e-6)^p)^(1/p) (DINO, Radenović)."""
    return patches.clamp(min=1e-6).pow(p).mean(dim=(1, 2)).pow(1.0 / p)


def encode(encoder, images, spec: FeatureSpec = FeatureSpec()):
    """uint8 (B, 3, H, W) images of one size → float features on the encoder's device:
    (B, D) for cls / gem, (B, 2D) for cls_gem, (B, h, w, D) for patch."""
    import torch
    import torch.nn.functional as F

    x = images.to(encoder.device)
    hw = target_shape(x.shape[-2], x.shape[-1], spec, encoder)
    x = fit(x, hw, spec).float().div(255)  # (B, 3, H, W) in [0, 1]
    ps = encoder.patch_size
    out = None
    for s in spec.scales:
        xs = x
        if s != 1.0:
            sh = max(ps, int(hw[0] * s) // ps * ps), max(ps, int(hw[1] * s) // ps * ps)
            xs = F.interpolate(x, size=sh, mode="bilinear", align_corners=False)  # DINO: bilinear
            if encoder.model is None:  # raw pixels: back to one length (the scale acts as a blur)
                xs = F.interpolate(xs, size=hw, mode="bilinear", align_corners=False)
        cls, patches = encoder.tokens(xs)  # (B, D), (B, h, w, D)
        if spec.kind == "patch":
            return patches
        if spec.kind == "cls":
            f = cls
        elif spec.kind == "gem":
            f = gem(patches, spec.gem_p)
        else:
            f = torch.cat([cls, gem(patches, spec.gem_p)], dim=1)  # (B, 2D)
        out = f if out is None else out + f
    return out / len(spec.scales)


# ---------------------------------------------------------------------------------------------------------
# datasets


def default_cache_dir() -> Path | None:
    """``$GENSIS_CACHE_DIR`` (``none`` disables caching), else ``$XDG_CACHE_HOME/gensis/features``."""
    env = os.environ.get("GENSIS_CACHE_DIR")
    if env:
        return None if env.lower() == "none" else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gensis" / "features"


class FeatureCache:
    """Feature arrays on disk, one safetensors file per (encoder, data, spec) key, written atomically."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = None if root is None else Path(root)
        self.warned = False  # a cache that cannot be written is said once per cache, not once per feature set

    def _path(self, meta: dict) -> Path:
        digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:32]
        return self.root / f"{digest}.safetensors"

    def get(self, meta: dict) -> np.ndarray | None:
        if self.root is None:
            return None
        path = self._path(meta)
        if not path.is_file():
            return None
        from safetensors import safe_open

        from gensis.rundir import safetensors_name

        try:
            with safetensors_name(path) as name, safe_open(name, "np") as f:
                if json.loads((f.metadata() or {}).get("key", "null")) != meta:
                    return None
                return f.get_tensor("features")
        except Exception:  # a damaged cache file is recomputed, never fatal
            return None

    def put(self, meta: dict, features: np.ndarray) -> None:
        if self.root is None:
            return
        import torch

        from gensis.rundir import make_folder, remove_stale_temps, save_tensors

        try:
            make_folder(self.root)
            remove_stale_temps(self.root)  # a killed evaluation's half-written file (ImageNet's: gigabytes)
            save_tensors(self._path(meta), {"features": torch.from_numpy(np.ascontiguousarray(features))},
                         metadata={"key": json.dumps(meta, sort_keys=True)})
        except OSError as e:  # a read-only or full cache disk only costs the reuse: said once, not fatal
            if not self.warned:
                self.warned = True
                print(f"gensis: warning: the feature cache {self.root} cannot be written ({e.strerror or e}): "
                      f"features are not kept for the next run (--cache DIR elsewhere, or --cache none)",
                      file=sys.stderr)


def _images(ds, indices: Sequence[int], workers: int = 4) -> Iterator[np.ndarray]:
    """The H×W×3 uint8 images of ``ds`` at ``indices``, read ahead by a few threads (PIL decodes off the GIL). An
    unreadable image (a folder of more than ``FULL_DECODE_LIMIT`` images is decoded as it is read) is one
    ``UserError`` naming it, with how to skip such images (features need every image of a set opened with
    them skipped: those found unreadable only now cannot be)."""
    from gensis.data.loader import _root
    from gensis.data.sources import SKIP_HINT, BadImageError
    from gensis.errors import UserError

    try:
        yield from _read_ahead(ds, indices, workers)
    except BadImageError as e:
        skipping = getattr(_root(ds), "skip_bad", False)
        raise UserError(f"{e}; {'fix or remove it (features need every image)' if skipping else SKIP_HINT}") from None


def _read_ahead(ds, indices: Sequence[int], workers: int) -> Iterator[np.ndarray]:
    if workers <= 1 or len(indices) < 8:
        for i in indices:
            yield ds.get(int(i))
        return
    with ThreadPoolExecutor(workers) as pool:
        chunk = 4 * workers
        for start in range(0, len(indices), chunk):
            yield from pool.map(ds.get, [int(i) for i in indices[start:start + chunk]])


def dataset_features(encoder, ds, spec: FeatureSpec = FeatureSpec(), batch_size: int = 64,
                     cache: FeatureCache | None = None, desc: str = "features") -> np.ndarray:
    """(N, D) float32 features (``spec.kind`` cls / gem / cls_gem) of every image of ``ds``, in order.

    Runs on the encoder's device (move it first with ``encoder.to(device)``). Consecutive images with the
    same target size are batched together (``batch_size`` at most). With a ``cache``, a result computed
    before for the same encoder, data and spec is read back instead.
    """
    import torch

    from gensis.errors import UserError
    from gensis.progress import progress

    if spec.kind == "patch":
        raise UserError("dataset_features gives one vector per image; use encode() for patch tokens")
    meta = {"encoder": encoder.identity, "data": cache_key(ds), "spec": spec.key(encoder), "v": 1}
    if cache is not None:
        hit = cache.get(meta)
        if hit is not None and len(hit) == len(ds):
            return hit
    out: list[np.ndarray] = []
    pending: list[np.ndarray] = []

    def flush():
        if pending:
            batch = torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8
            with torch.no_grad():
                out.append(encode(encoder, batch, spec).float().cpu().numpy())
            pending.clear()

    from gensis.data.loader import _is_array_backed

    with progress(total=len(ds), desc=desc, leave=False) as bar:
        if _is_array_backed(ds):  # one array: whole batches at once
            for start in range(0, len(ds), batch_size):
                pending.extend(ds.stack(np.arange(start, min(start + batch_size, len(ds)))))
                flush()
                bar.update(min(batch_size, len(ds) - start))
        for img in (() if _is_array_backed(ds) else _images(ds, range(len(ds)))):
            if pending and (img.shape != pending[0].shape or len(pending) >= batch_size):
                flush()
            pending.append(img)
            bar.update(1)
        flush()
    feats = np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)
    if cache is not None:
        cache.put(meta, feats)
    return feats


def extract_features(encoder, ds, batch_size: int = 256, device=None, desc: str = "features",
                     cache: FeatureCache | None = None) -> np.ndarray:
    """(N, D) CLS features of every image of ``ds`` at the encoder's own input size (k-NN, linear, E-LDM)."""
    import numbers

    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        from gensis.errors import UserError

        raise UserError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if device is not None:
        encoder.to(device)
    return dataset_features(encoder, ds, FeatureSpec("cls"), batch_size, cache, desc)
