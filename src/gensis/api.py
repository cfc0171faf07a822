"""The public Python API of gensis (re-exported by ``import gensis``; guide: docs/api.md).

Every pipeline stage is a function taking objects: a dataset (an ``ImageSet``, a ``--data`` string, an image
array or any torch Dataset of images), a config (a dict from ``gensis.make_config(...)``, or a preset name plus
overrides) and a ``Path``. Each returns the run directory it wrote, the same folder the command line writes,
so what the CLI does and what Python does can be mixed freely. The command line is a thin layer over the same
library functions (``gensis.ssl.train.train``, ``gensis.eldm.train.train``, ``gensis.bank.generate_bank``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from gensis.bank.reader import BankReader
    from gensis.data.sources import ImageSet
    from gensis.eldm.model import ELDMGenerator
    from gensis.models.encoder import Encoder

Config = dict[str, Any]
PathLike = str | os.PathLike[str]
STAGES = ("pretrain", "eldm", "bank")


# ---------------------------------------------------------------------------------------------------------
# configs


def _nested(overrides: Mapping[str, Any]) -> Config:
    """``{"optim.epochs": 2, "data": {"limit": 64}}`` → nested dict (values kept as given, not parsed)."""
    out: Config = {}
    for key, value in overrides.items():
        node = out
        parts = str(key).split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(_nested(value))
        else:
            node[parts[-1]] = _nested(value) if isinstance(value, Mapping) else value
    return out


def make_config(stage: str, preset: str = "demo", overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Config:
    """The resolved, validated config of ``stage`` (``pretrain``, ``eldm`` or ``bank``): ``base.yaml`` → preset
    (``smoke``, ``demo``, ``small``, ``paper`` or a YAML file) → overrides (``{"optim.epochs": 2}`` or
    ``["optim.epochs=2"]``). The same schema check as the command line: unknown keys and bad values raise
    ``gensis.errors.UserError`` with one line."""
    from gensis.config import load_config

    if stage not in STAGES:
        from gensis.errors import UserError

        raise UserError(f"unknown stage '{stage}'; valid: {', '.join(STAGES)}")
    if overrides is None or isinstance(overrides, Mapping):  # nested before resolving: a "method" picks per_method
        return load_config(stage, preset, _nested(overrides or {}), where="overrides")
    return load_config(stage, preset, list(overrides))


def _resolve(stage: str, cfg: Mapping[str, Any] | Any | None, preset: str,
             overrides: Mapping[str, Any] | Sequence[str] | None) -> Config:
    if cfg is None:
        return make_config(stage, preset, overrides)
    given: dict[str, Any]
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        given = dataclasses.asdict(cfg)
    elif hasattr(cfg, "to_dict"):
        given = dict(cfg.to_dict())
    elif isinstance(cfg, Mapping):
        given = dict(cfg)
    else:
        from gensis.errors import UserError

        raise UserError(f"config must be a mapping (from gensis.make_config) or a dataclass, got {type(cfg).__name__}")
    from gensis.config import load_config, merge, validate

    base = load_config(stage, "base")
    full = merge(base, given, where="config")
    if overrides:
        full = merge(full, _nested(overrides) if isinstance(overrides, Mapping) else _parse(overrides),
                     where="overrides")
    validate(stage, full, base)
    return full


def _parse(items: Sequence[str]) -> Config:
    from gensis.config import parse_overrides

    return parse_overrides(items)


# ---------------------------------------------------------------------------------------------------------
# data


def as_image_set(data: Any, labels: Any = None) -> ImageSet:
    """An ``ImageSet`` from an ImageSet, a ``--data`` string or path (the whole source unless a split is named),
    a uint8 N×H×W(×3) array, a uint8 (N, 3, H, W) tensor or any map-style torch Dataset of images."""
    from gensis.data.torch_datasets import as_image_set as _as

    return _as(data, labels)


def _data_spec(data: Any) -> str:
    """What the stages' ``data`` argument takes: strings/paths as they are, objects registered in-process."""
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    from gensis.data.sources import register_data

    return register_data(as_image_set(data)) + "@all"


# ---------------------------------------------------------------------------------------------------------
# pipeline stages


def pretrain(data: Any, out: PathLike, *, preset: str = "demo", config: Mapping[str, Any] | None = None,
             overrides: Mapping[str, Any] | Sequence[str] | None = None, bank: PathLike | None = None,
             interp: str | None = None, method: str | None = None, resume: bool = False,
             quiet: bool = True) -> Path:
    """Self-supervised pretraining (DINO by default; the Gen- variant with ``bank``), as ``gensis pretrain``;
    returns the run directory.

    ``data``: a ``--data`` string (its train split is used) or an object (used whole). ``interp``: the
    disentanglement source, ``bank`` (default with a bank), ``pixel`` or ``none``. ``method``: a registered
    SSL method (``gensis.ssl.methods.METHODS``: dino, dinov2, ibot, simclr, ...), as ``--method``; default: the
    config's ``method`` (dino). An unknown name is a ``UserError`` listing the valid ones.
    """
    from gensis.ssl.train import train

    extra: dict[str, Any] = {}
    if method is not None:
        from gensis.ssl.methods import method_class

        method_class(method)  # an unknown name lists the valid ones
        extra["method"] = method
    mode = interp if interp is not None else ("bank" if bank is not None else None)
    if mode is not None:
        extra["gen.interp"] = mode
    if config is None and extra:  # with the preset, so that the method's per_method values apply
        overrides = ({**overrides, **extra} if isinstance(overrides, Mapping)
                     else [*(overrides or ()), *(f"{k}={v}" for k, v in extra.items())])
    cfg = _resolve("pretrain", config, preset, overrides)
    if config is not None and extra:
        cfg = _resolve("pretrain", cfg, preset, extra)
    run = train(cfg, _data_spec(data), Path(out), resume=resume, bank_path=None if bank is None else str(bank),
                quiet=quiet)
    return Path(run.path)


def train_autoencoder(data: Any, out: PathLike, *, preset: str = "demo", config: Mapping[str, Any] | None = None,
                      overrides: Mapping[str, Any] | Sequence[str] | None = None, resume: bool = False,
                      quiet: bool = True) -> Path:
    """The E-LDM's VQ autoencoder, as ``gensis eldm train-ae``; returns the run directory."""
    from gensis.eldm.train_ae import train_ae

    cfg = _resolve("eldm", config, preset, overrides)
    return Path(train_ae(cfg, _data_spec(data), Path(out), resume=resume, quiet=quiet).path)


def train_eldm(encoder: PathLike, data: Any, out: PathLike, *, autoencoder: PathLike | None = None,
               preset: str = "demo", config: Mapping[str, Any] | None = None,
               overrides: Mapping[str, Any] | Sequence[str] | None = None, resume: bool = False,
               quiet: bool = True) -> Path:
    """The embedding-conditioned diffusion model, as ``gensis eldm train``; returns the run directory.

    ``encoder``: a pretraining run; ``autoencoder``: a ``train_autoencoder`` run (needed for ``space=vq``).
    """
    from gensis.eldm.train import train

    cfg = _resolve("eldm", config, preset, overrides)
    ae_path = None if autoencoder is None else str(autoencoder)
    run = train(cfg, str(encoder), _data_spec(data), Path(out), ae_path=ae_path, resume=resume, quiet=quiet)
    return Path(run.path)


def generate_bank(eldm: PathLike | None, data: Any, out: PathLike, *, generator: Any = None, preset: str = "demo",
                  config: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | Sequence[str] | None = None,
                  quiet: bool = True) -> Path:
    """The augmentation bank, as ``gensis bank generate``; returns the bank folder (rerun to finish a killed one).

    ``generator``: instead of an E-LDM run, any object implementing
    ``gensis.eldm.generator.EmbeddingConditionedGenerator`` (docs/api.md shows an adapter).
    """
    from gensis.bank.generate import generate_bank as _generate

    cfg = _resolve("bank", config, preset, overrides)
    res = _generate(cfg, _data_spec(data), Path(out), eldm=None if eldm is None else str(eldm), generator=generator,
                    quiet=quiet)
    if not res.complete:
        from gensis.errors import UserError

        raise UserError(f"bank {out} is incomplete; call generate_bank again to finish it")
    return Path(out)


# ---------------------------------------------------------------------------------------------------------
# using what was trained


def load_encoder(run: PathLike, which: str = "teacher", device: str = "cpu") -> Encoder:
    """The frozen encoder of a pretraining run (``pixels``/``random``: the baselines). Call it on uint8
    (B, 3, H, W) images to get (B, D) CLS embeddings; ``.model`` is the timm ViT."""
    from gensis.device import pick_device
    from gensis.models.encoder import load_encoder as _load

    return _load(str(run), which).to(pick_device(device))


def embed(encoder: Encoder | PathLike, images: Any, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """(N, D) float32 embeddings of images (anything ``as_image_set`` takes), in order."""
    from gensis.device import pick_device
    from gensis.models.encoder import Encoder as _Encoder
    from gensis.eval.features import extract_features

    enc = encoder if isinstance(encoder, _Encoder) else load_encoder(encoder)
    return extract_features(enc, as_image_set(images), batch_size, pick_device(device))


def load_generator(run: PathLike, device: str = "cpu", guidance: float | None = None, steps: int | None = None,
                   sampler: str | None = None, with_encoder: bool = True, amp: str = "auto") -> ELDMGenerator:
    """The E-LDM of a finished ``train_eldm`` run: ``.encode(images)``, ``.generate(embeddings, seeds)``,
    ``.interpolate(e1, e2, alpha, seeds=...)``. ``amp``: bf16 autocast, ``auto`` (CUDA, AMX CPUs), ``bf16``
    or ``off``."""
    from gensis.eldm.model import load_generator as _load

    return _load(Path(run), device=device, guidance=guidance, steps=steps, sampler=sampler, amp=amp,
                 with_encoder=with_encoder)


def open_bank(path: PathLike) -> BankReader:
    """Random access to a bank's entries (``generative_batch``, ``interpolated_batch``, ``secondary``)."""
    from gensis.bank.reader import BankReader

    return BankReader(path)


def knn(encoder: Encoder | PathLike, train: Any, test: Any, ks: Sequence[int] = (10, 20, 100, 200),
        temperature: float = 0.07, batch_size: int = 256, device: str = "cpu") -> dict[str, Any]:
    """DINO's weighted k-NN accuracy (top-1/top-5 in %) of a frozen encoder, as ``gensis eval knn``.

    ``train``/``test``: labelled images (anything ``as_image_set`` takes). Returns the JSON-ready result
    (``top1``, ``top5``, ``k`` of the best k, ``results`` per k)."""
    from gensis.device import pick_device
    from gensis.eval.knn import knn_eval
    from gensis.models.encoder import Encoder as _Encoder

    enc = encoder if isinstance(encoder, _Encoder) else load_encoder(encoder)
    return knn_eval(enc, as_image_set(train), as_image_set(test), list(ks), temperature, pick_device(device),
                    batch_size)


def linear(encoder: Encoder | PathLike, train: Any, test: Any, *, epochs: int = 100,
           lrs: Sequence[float] | None = None, aug_copies: int = 2, batch_size: int = 256,
           device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """DINO's linear probe (a learning-rate sweep of linear heads on frozen features), as ``gensis eval
    linear``; returns the JSON-ready result (``top1``, ``top5``, ``lr`` of the best head, ``results`` per lr)."""
    from gensis.device import pick_device
    from gensis.eval.linear import DEFAULT_LRS, LinearConfig, linear_eval
    from gensis.models.encoder import Encoder as _Encoder

    enc = encoder if isinstance(encoder, _Encoder) else load_encoder(encoder)
    cfg = LinearConfig(lrs=tuple(lrs) if lrs else DEFAULT_LRS, epochs=epochs, aug_copies=aug_copies, seed=seed)
    return linear_eval(enc, as_image_set(train), as_image_set(test), cfg, pick_device(device), batch_size)


def export_model(run: PathLike, to: str, out: PathLike, which: str = "teacher") -> Path:
    """``gensis export``: ``to`` = ``timm`` (folder for ``timm.create_model("local-dir:OUT")``),
    ``safetensors`` (plain state_dict) or ``diffusers`` (an E-LDM run as diffusers folders)."""
    from gensis.export import export as _export

    return _export(run, to, out, which)


__all__ = ["Config", "as_image_set", "embed", "export_model", "generate_bank", "knn", "linear", "load_encoder",
           "load_generator",
           "make_config", "open_bank", "pretrain", "train_autoencoder", "train_eldm"]
