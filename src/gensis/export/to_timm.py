"""A pretraining run's encoder as a timm model folder, loadable without gensis.

``export_timm(run, out)`` writes::

    OUT/config.json          timm's hub/local-dir format: architecture, num_classes 0, num_features, global_pool,
                             model_args (the preset's patch size / width / depth / heads / image size) and
                             pretrained_cfg (input size, mean/std, interpolation, crop_pct 1.0)
    OUT/model.safetensors    the backbone's state_dict (timm parameter names)

so that ``timm.create_model("local-dir:OUT", pretrained=True)`` rebuilds the exact backbone gensis evaluates
(the CLS token after the final norm, ``num_classes=0``), and ``timm.data.resolve_data_config({}, model=m)`` +
``timm.data.create_transform(**cfg)`` give the matching preprocessing. ``export_state_dict(run, out_file)``
writes only the plain ``state_dict`` (safetensors, with the same description as JSON metadata) for other tools.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gensis.data.transforms import MEAN, STD
from gensis.errors import UserError
from gensis.models.encoder import WHICH
from gensis.export.atomic import staged_folder
from gensis.rundir import RunDir, atomic_write_json, described_by, load_tensors, make_folder, read_json, save_tensors

# model config keys that change the architecture (drop_path_rate is training-only and left out)
_ARCH_KEYS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "init_values")


@dataclass(frozen=True)
class EncoderSource:
    """Where an encoder's weights and description live: a pretraining run, or the copy inside an E-LDM run."""

    weights: Path
    model_cfg: dict[str, Any]
    image_size: int
    which: str


def find_encoder(run: str | os.PathLike[str], which: str = "teacher") -> EncoderSource:
    """The encoder of a pretraining run ``run`` (or of the E-LDM run ``run``: its conditioning encoder)."""
    if which not in WHICH:
        raise UserError(f"--which must be one of {', '.join(WHICH)}, got '{which}'")
    path = Path(run)
    if not path.is_dir():
        raise UserError(f"{path} is not a run directory")
    if (path / "eldm.json").is_file():  # an E-LDM run: export the encoder it is conditioned on
        info = read_json(path / "eldm.json", "E-LDM description")
        with described_by(path / "eldm.json", "E-LDM description"):
            enc_dir, enc_which = str(info["encoder"]["dir"]), str(info["encoder"]["which"])
        enc = path / enc_dir
        if not enc.is_dir():
            enc = Path(enc_dir)
        if not enc.is_dir():
            raise UserError(f"{path}: its encoder '{enc_dir}' is not a run directory")
        path, which = enc, enc_which
    weights = path / f"{which}_backbone.safetensors"
    if not weights.is_file():
        raise UserError(f"{path} has no {weights.name}: is it a finished `gensis pretrain` run?")
    cfg = RunDir(path).config()
    return EncoderSource(weights, dict(cfg["model"]), int(cfg["data"]["image_size"]), which)


def timm_model_args(model_cfg: dict[str, Any], image_size: int) -> dict[str, Any]:
    """The ``timm.create_model`` keyword arguments gensis builds the backbone with (``models/backbone.py``)."""
    args: dict[str, Any] = {"img_size": int(image_size), "global_pool": "token", "dynamic_img_size": True}
    for k in _ARCH_KEYS:
        if model_cfg.get(k) is not None:
            args[k] = model_cfg[k]
    return args


def timm_config(src: EncoderSource, num_features: int) -> dict[str, Any]:
    """The ``config.json`` timm's ``local-dir:`` / ``hf-hub:`` loaders read."""
    s = src.image_size
    return {
        "architecture": src.model_cfg["arch"],
        "num_classes": 0,
        "num_features": int(num_features),
        "global_pool": "token",
        "model_args": timm_model_args(src.model_cfg, s),
        "pretrained_cfg": {
            "input_size": [3, s, s],
            "fixed_input_size": False,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": list(MEAN),
            "std": list(STD),
            "num_classes": 0,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
            "license": "see the training data's license",
            "tag": f"gensis-{src.which}",
        },
    }


def _num_features(tensors: dict[str, Any]) -> int:
    if "norm.weight" in tensors:
        return int(tensors["norm.weight"].shape[0])
    if "cls_token" in tensors:
        return int(tensors["cls_token"].shape[-1])
    raise UserError("the encoder weights have neither 'norm.weight' nor 'cls_token': not a timm ViT")


def write_timm_folder(src: EncoderSource, folder: Path) -> None:
    """Write ``config.json`` + ``model.safetensors`` of ``src`` into ``folder`` (created if needed)."""
    tensors = load_tensors(src.weights)
    make_folder(folder)
    save_tensors(folder / "model.safetensors", tensors, {"format": "pt"})
    atomic_write_json(folder / "config.json", timm_config(src, _num_features(tensors)))


def export_timm(run: str | os.PathLike[str], out: str | os.PathLike[str], which: str = "teacher") -> Path:
    """Write ``OUT/config.json`` + ``OUT/model.safetensors`` (see module docstring) atomically; returns ``OUT``."""
    src = find_encoder(run, which)
    with staged_folder(out) as tmp:
        write_timm_folder(src, tmp)
    return Path(out)


def export_state_dict(run: str | os.PathLike[str], out: str | os.PathLike[str], which: str = "teacher") -> Path:
    """The backbone's plain ``state_dict`` as one safetensors file; metadata ``timm_config`` holds config.json.

    ``out`` may be a new file name (``*.safetensors``) or a folder, new or empty as for ``--to timm`` (then
    ``OUT/model.safetensors``, written with ``staged_folder``); another file suffix (``x.bin``: it made a folder
    ``x.bin/``) is a ``UserError``, unless ``out`` is an existing folder or ends with ``/``.
    """
    path = Path(out)
    as_folder = str(out).endswith(("/", os.sep)) or path.is_dir()
    if not as_folder and path.suffix and path.suffix.lower() != ".safetensors":
        raise UserError(f"{out} names a {path.suffix} file, but --to safetensors writes a safetensors file: name it "
                        f"*.safetensors, or name a folder for OUT/model.safetensors (a folder name with a dot: end "
                        f"it with /)")
    src = find_encoder(run, which)
    tensors = load_tensors(src.weights)
    metadata = {"format": "pt", "timm_config": json.dumps(timm_config(src, _num_features(tensors)))}
    if as_folder or not path.suffix:  # a folder, as --to timm: new or empty, never one of the user's filled ones
        with staged_folder(out) as tmp:
            save_tensors(tmp / "model.safetensors", tensors, metadata)
        return path / "model.safetensors"
    if path.exists() or path.is_symlink():  # e.g. a run's own teacher_backbone.safetensors: never replaced
        raise UserError(f"{path} already exists; choose another output file or remove it")
    save_tensors(path, tensors, metadata)
    return path
