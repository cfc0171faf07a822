"""Frozen encoders for evaluation and conditioning: "image batch → CLS embedding" (and patch tokens).

``load_encoder(spec)`` accepts a pretraining run directory (its ``teacher_backbone.safetensors``, DINO's
choice for evaluation, rebuilt from the run's ``config.yaml``), the two baselines ``pixels`` (raw pixels)
and ``random`` (a randomly initialised backbone of the demo preset's architecture), or
``timm:NAME=WEIGHTS`` (any timm ViT with a weights file: safetensors, or a torch checkpoint read with
``weights_only=True``, e.g. DINO's published ``dino_deitsmall16_pretrain.pth``; LayerScale weights such as UNI's
may name timm's plain ViT, which is then built with LayerScale). Features over datasets
(batches, caching, multi-scale) live in ``gensis.eval.features``: a backbone knows no dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gensis.data.transforms import MEAN, STD  # the constants only: no dataset, no augmentation
from gensis.errors import UserError
from gensis.models.backbone import build_backbone, embed_dim
from gensis.rundir import RunDir, file_hash, load_tensors

PIXEL_PATCH = 8  # patch size of the raw-pixel baseline's "patch tokens"


def normalize(x: torch.Tensor) -> torch.Tensor:
    """float (B, 3, H, W) in [0, 1] → standardized by the ImageNet mean and std (as in pretraining)."""
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def resize_center_crop(x: torch.Tensor, hw: tuple[int, int] | int) -> torch.Tensor:
    """(B, 3, h, w) → (B, 3, H, W): the short side resized (antialiased) to max(H, W), then the centre H × W
    crop, as pretraining loads a folder's images and DINO's eval transform does (Resize, CenterCrop): a
    non-square image is cropped, never stretched. A square image is resized to (H, W) directly."""
    from torchvision.transforms.v2 import functional as TF

    H, W = (hw, hw) if isinstance(hw, int) else (int(hw[0]), int(hw[1]))
    if tuple(x.shape[-2:]) == (H, W):
        return x
    out: torch.Tensor
    if x.shape[-2] == x.shape[-1] and H == W:
        out = TF.resize(x, [H, W], antialias=True)  # exactly the square resize used before crops existed
    else:
        out = TF.center_crop(TF.resize(x, max(H, W), antialias=True), [H, W])  # (B, 3, H, W)
    return out


FLOAT_MAX = 1.5   # float images above this are taken for unscaled 0..255 values
FLOAT_MIN = -0.5  # ... below this for images standardized by a mean and std


def check_unit_range(x: torch.Tensor, where: str = "") -> None:
    """One-line errors for float images outside [FLOAT_MIN, FLOAT_MAX] or not finite; ``where`` prefixes them."""
    if not x.numel():
        return
    lo, hi = (float(v) for v in torch.aminmax(x))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise UserError(f"{where}float images hold NaN or infinite values")
    if lo < FLOAT_MIN:
        raise UserError(f"{where}float images must be in [0, 1], got values down to {lo:g}: already normalized by "
                        f"a mean/std? give the [0, 1] images (gensis normalizes them itself)")
    if hi > FLOAT_MAX:
        raise UserError(f"{where}float images must be in [0, 1], got values up to {hi:g}: unscaled 0..255 pixels? "
                        f"divide by 255 or give uint8")


def check_images(images: torch.Tensor) -> torch.Tensor:
    """``images`` if they are a (B, 3, H, W) uint8 tensor (0..255) or floating-point tensor in [0, 1] (half
    precision: as float32); otherwise a one-line ``UserError`` saying what is wrong."""
    if not isinstance(images, torch.Tensor):
        raise UserError(f"images must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise UserError(f"images must be (B, 3, H, W) with 3 colour channels, got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if not images.dtype.is_floating_point:
        raise UserError(f"images must be uint8 (0..255) or float (0..1), got {images.dtype}")
    x = images if images.dtype in (torch.float32, torch.float64) else images.float()
    check_unit_range(x)
    return x


@dataclass
class Encoder:
    """A frozen image → feature function with what is needed to feed it."""

    model: nn.Module | None  # None for raw pixels
    image_size: int
    name: str
    identity: str  # hash of the weights (or the baseline's name)

    @property
    def dim(self) -> int:
        return 3 * self.image_size**2 if self.model is None else embed_dim(self.model)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images → float (B, D) on the model's device; images are resized to ``image_size``
        (a non-square image: its short side, then the centre crop, as in pretraining; never stretched).

        Two encodings of pixel values are accepted: uint8 in 0..255 (what datasets, banks and generators
        give) and floating point in [0, 1] (``torchvision`` ``ToDtype(float32, scale=True)``); the encoder
        standardizes them itself. Both give the same features on images of ``image_size``; images of another
        size are resized in their own dtype (uint8 results are rounded), so there the two differ by that
        rounding. Anything else is a one-line ``UserError``: other dtypes, and float images
        whose values cannot be [0, 1] ones (above 1.5: unscaled 0..255 values; below -0.5: images already
        standardized by a mean/std).
        """
        x = check_images(images)
        if self.model is not None:  # to the model's device first: resizing there is what a GPU is for
            x = x.to(next(self.model.parameters()).device, non_blocking=True)
        x = resize_center_crop(x, self.image_size)  # (B, 3, S, S)
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()  # (B, 3, S, S) in [0, 1]
        if self.model is None:
            return x.flatten(1)
        return self.model(normalize(x)).float()  # type: ignore[no-any-return]

    @property
    def patch_size(self) -> int:
        """Side of a patch in pixels (the ViT's; 8 for the raw-pixel baseline)."""
        if self.model is None:
            return PIXEL_PATCH
        ps: Any = getattr(self.model.patch_embed, "patch_size")  # timm: an int or an (h, w) tuple
        return int(ps[0] if isinstance(ps, (tuple, list)) else ps)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self.model is None else next(self.model.parameters()).device

    @torch.no_grad()
    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float (B, 3, H, W) in [0, 1], H and W multiples of ``patch_size`` → CLS (B, D) and patch tokens
        (B, h, w, D) with h = H / patch_size (the final block's output after the norm, as DINO's
        ``get_intermediate_layers(x, n=1)``). Raw pixels: CLS = the flattened image, tokens = the patches."""
        ps = self.patch_size
        b, _, H, W = x.shape
        h, w = H // ps, W // ps
        if self.model is None:
            x = x.to(torch.float32)
            patches = x[:, :, :h * ps, :w * ps].unfold(2, ps, ps).unfold(3, ps, ps)  # (B, 3, h, w, ps, ps)
            patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, h, w, 3 * ps * ps)  # (B, h, w, 3·ps²)
            return x.flatten(1), patches
        features: Any = getattr(self.model, "forward_features")  # timm ViT
        out = features(normalize(x.to(self.device).float())).float()  # (B, prefix + N, D)
        prefix = getattr(self.model, "num_prefix_tokens", 1)
        return out[:, 0], out[:, prefix:].reshape(b, h, w, -1)  # (B, D), (B, h, w, D)

    def to(self, device: torch.device | str) -> "Encoder":
        if self.model is not None:
            self.model.to(device)
        return self


def _encoder_hint(spec: str) -> str:
    """What an --encoder that is no run folder probably was, and what to give instead ('' when nothing is
    recognised): a weights file, a `gensis export --to timm` folder, a misspelt baseline."""
    import difflib

    p = Path(spec).expanduser()
    if p.is_file() and p.suffix in (".safetensors", ".pth", ".pt", ".bin"):
        run = p.parent if (p.parent / "manifest.json").is_file() else None
        return (f"; it is a weights file: give its run folder {run}" if run else
                f"; it is a weights file: give the run folder it came from, or timm:NAME={spec} for a timm ViT")
    if p.is_dir() and (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        return ("; it is a model exported by `gensis export --to timm`: give the run folder it was exported from "
                "(timm loads the export itself: timm.create_model('local-dir:...'))")
    close = difflib.get_close_matches(spec, ["pixels", "random"], n=1, cutoff=0.8)
    return f"; did you mean '{close[0]}'?" if close else ""


WHICH = ("teacher", "student")  # the two backbones a pretraining run saves


def check_which(which: str) -> None:
    """``which`` names one of a run's backbones (``bogus`` was "RUN has no bogus_backbone.safetensors: is the
    pretraining run finished?")."""
    if which not in WHICH:
        raise UserError(f"which must be one of {', '.join(WHICH)}, got {which!r}")


def check_encoder_run(spec: str, which: str = "teacher") -> Path:
    """The weights file of the finished pretraining run ``spec`` (cheap checks only, nothing loaded), so a stage
    can refuse a wrong ``--encoder`` before it reads any data; ``pixels``/``random``/``timm:`` pass through."""
    check_which(which)
    if spec in ("pixels", "random") or str(spec).startswith("timm:"):
        return Path(spec)
    from gensis.folder_kind import require_kind

    run = RunDir(spec)
    if not Path(spec).is_dir():
        raise UserError(f"encoder '{spec}' is not a run directory (or 'pixels' / 'random' / timm:NAME=WEIGHTS)"
                        f"{_encoder_hint(spec)}")
    require_kind(spec, "pretrain")  # an E-LDM run, a bank, ...: one line naming both kinds
    weights = run / f"{which}_backbone.safetensors"
    if not weights.is_file():
        if not (run / "manifest.json").is_file():  # e.g. the data folder given as --encoder
            raise UserError(f"{spec} is not a pretraining run (no manifest.json): pass the folder written by "
                            f"`gensis pretrain --out`, or 'pixels' / 'random' / timm:NAME=WEIGHTS{_encoder_hint(spec)}")
        raise UserError(f"{spec} has no {weights.name}: is the pretraining run finished?")
    return Path(weights)


def load_encoder(spec: str, which: str = "teacher", image_size: int | None = None, seed: int = 0,
                 like: str | None = None) -> Encoder:
    """``spec``: a pretraining RUN directory, ``pixels`` or ``random``.

    ``random`` builds the demo preset's architecture, or that of the run ``like`` when given, so the
    random-init baseline has exactly the architecture of the model it is compared with.
    """
    check_which(which)
    if spec == "pixels":
        return Encoder(None, image_size or 28, "pixels", "pixels")
    if spec == "random":
        from gensis.config import load_config

        if like:
            from gensis.folder_kind import require_kind

            require_kind(like, "pretrain")
        cfg = RunDir(like).config() if like else load_config("pretrain", "demo")
        size = image_size or cfg["data"]["image_size"]
        with torch.random.fork_rng(devices=[]):  # the caller's torch generator is left as it was
            torch.manual_seed(seed)
            model = build_backbone({**cfg["model"], "drop_path_rate": 0.0}, size).eval()
        arch = hashlib.sha256(json.dumps(cfg["model"], sort_keys=True).encode()).hexdigest()[:8]
        return Encoder(model, size, "random", f"random-seed{seed}-{arch}")
    if spec.startswith("timm:"):
        return _timm_encoder(spec, image_size)
    run = RunDir(spec)
    weights = check_encoder_run(spec, which)
    cfg = run.config()
    size = cfg["data"]["image_size"]
    model = build_backbone({**cfg["model"], "drop_path_rate": 0.0}, size)
    try:
        model.load_state_dict(load_tensors(weights))
    except RuntimeError as e:  # weights and config.yaml disagree (edited config, mixed-up files)
        raise UserError(f"{weights} does not match the model in {run / 'config.yaml'} "
                        f"({str(e).splitlines()[0][:160]})") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Encoder(model, size, str(spec), file_hash(weights))


def _timm_encoder(spec: str, image_size: int | None) -> Encoder:
    """``timm:NAME=WEIGHTS``: timm architecture NAME with the weights in file WEIGHTS (no download)."""
    body = spec[len("timm:"):]
    name, sep, weights = body.partition("=")
    if not sep or not name or not weights:
        raise UserError(f"encoder '{spec}': write timm:NAME=WEIGHTS (e.g. timm:vit_small_patch16_224=dino.pth)")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"encoder '{spec}': weights file not found: {weights}")
    size = image_size or 224
    cfg = {"arch": name, "drop_path_rate": 0.0}
    model = build_backbone(cfg, size)
    state = _read_state_dict(path)
    model = _with_layerscale_of(model, state, cfg, size)  # UNI-style weights into timm's plain ViT name
    own = model.state_dict()
    parts = {k.split(".")[0] for k in own}  # cls_token, pos_embed, patch_embed, blocks, norm ...
    extra = [k for k in state if k not in own and k.split(".")[0] in parts]  # a DINO head's head.* is no backbone part
    if extra:  # e.g. LayerScale (blocks.0.ls1.gamma) or more blocks: dropped, they gave other features without a word
        raise UserError(f"{path} does not fit timm's {name}: {len(extra)} of its weights have no place in it (e.g. "
                        f"{extra[0]}): the weights are of another architecture (LayerScale, more blocks, ...)")
    state = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in state]
    if missing:
        raise UserError(f"{path} does not fit timm's {name}: {len(missing)} weights missing (e.g. {missing[0]})")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise UserError(f"{path} does not fit timm's {name}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                        f"the model {tuple(own[bad[0]].shape)}")
    model.load_state_dict(state)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Encoder(model, size, spec, f"{name}-{file_hash(path)}")


LAYERSCALE_KEY = ".ls1.gamma"  # timm's LayerScale gain of a block's attention branch (blocks.N.ls1.gamma)


def _with_layerscale_of(model: nn.Module, state: dict[str, torch.Tensor], model_cfg: dict[str, Any],
                        size: int) -> nn.Module:
    """``model``, or the same timm ViT rebuilt with LayerScale when the weights ``state`` hold LayerScale gains
    (``blocks.N.ls1.gamma``/``ls2.gamma``, as UNI-style pathology ViTs trained with ``init_values``) and ``model``
    has none: timm's plain ViT names have no LayerScale. The value of ``init_values`` does not matter (nonzero
    makes the gains exist); the loaded gains replace it. Anything else is left to the strict load that follows."""
    from timm.models.vision_transformer import VisionTransformer

    def has_layerscale(keys: Any) -> bool:
        return any(str(k).endswith(LAYERSCALE_KEY) for k in keys)

    if not isinstance(model, VisionTransformer) or has_layerscale(model.state_dict()) or not has_layerscale(state):
        return model
    return build_backbone({**model_cfg, "init_values": 1e-5}, size)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file or a torch checkpoint (read with ``weights_only=True``, no code runs);
    DINO-style wrappers (``teacher``/``student``/``state_dict``/``model``) and ``module.``/``backbone.``
    prefixes are unwrapped."""
    state: Any
    if path.suffix == ".safetensors":
        state = load_tensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"cannot read weights {path}: {type(e).__name__}: {e}") from None
    for key in ("teacher", "state_dict", "model", "student"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict")
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out
