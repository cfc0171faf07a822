"""Take what gensis trained into other tools: ``gensis export RUN --to FORMAT OUT``.

Formats (registry ``EXPORTERS``)
    timm          a pretraining run's encoder as a timm folder: ``timm.create_model("local-dir:OUT", pretrained=True)``
    safetensors   the encoder's plain ``state_dict`` (one safetensors file, timm parameter names)
    diffusers     an E-LDM run as diffusers ``save_pretrained`` folders (+ ``gensis.eldm.pipeline``'s
                  ``EmbeddingConditionedPipeline``)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from gensis.errors import UserError


def _timm(run: str | os.PathLike[str], out: str | os.PathLike[str], which: str = "teacher") -> Path:
    from gensis.export.to_timm import export_timm

    return export_timm(run, out, which)


def _state_dict(run: str | os.PathLike[str], out: str | os.PathLike[str], which: str = "teacher") -> Path:
    from gensis.export.to_timm import export_state_dict

    return export_state_dict(run, out, which)


def _diffusers(run: str | os.PathLike[str], out: str | os.PathLike[str], which: str = "teacher") -> Path:
    from gensis.export.to_diffusers import export_diffusers

    return export_diffusers(run, out)


EXPORTERS: dict[str, Callable[..., Path]] = {"timm": _timm, "safetensors": _state_dict, "diffusers": _diffusers}
FOLDERS = {"timm": "config.json + model.safetensors", "diffusers": "unet/, scheduler/, conditioner/ ..."}  # what a folder holds


def export(run: str | os.PathLike[str], to: str, out: str | os.PathLike[str], which: str = "teacher") -> Path:
    """Export run ``run`` in format ``to`` (one of ``EXPORTERS``) to ``out``; returns what was written."""
    if to not in EXPORTERS:
        raise UserError(f"unknown export format '{to}'; valid: {', '.join(EXPORTERS)}")
    if to != "safetensors" and str(out).lower().endswith(".safetensors"):  # made a folder named x.safetensors
        raise UserError(f"{out} names a .safetensors file, but a {to} export is a folder ({FOLDERS[to]}): name a "
                        f"folder" + (", or use --to safetensors for the state_dict as one file" if to == "timm" else ""))
    return EXPORTERS[to](run, out, which)


__all__ = ["EXPORTERS", "export"]
