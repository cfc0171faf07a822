"""``bank.json``: what a bank was made from and how, and the identity (hash) that names it."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from gensis.bank.format import FORMAT_VERSION
from gensis.bank.plan import Layout
from gensis.config import flatten
from gensis.errors import UserError, reading
from gensis.rundir import atomic_write_json, versions

HEADER = "bank.json"
# the keys of `sources` that determine the bank's bytes (paths and names do not)
IDENTITY_SOURCES = ("data_identity", "num_images", "encoder_identity", "eldm_identity")
IMAGENET_TRAIN = 1_281_167  # ImageNet-1K training images, for the projected cost of the paper's bank


def settings_from_cfg(cfg: dict, secondary: str) -> dict:
    g, st = cfg["gen"], cfg["storage"]
    return {
        "seed": int(g["seed"]),
        "num_generative": int(g["num_generative"]),
        "alphas": [float(a) for a in g["alphas"]],
        "secondary": secondary,
        "interpolation": g["interpolation"],
        "guidance": None if g["guidance"] is None else float(g["guidance"]),
        "steps": None if g["steps"] is None else int(g["steps"]),
        "sampler": g["sampler"],
        "image_size": int(g["image_size"]) if g["image_size"] else None,
        "codec": st["codec"],
        "quality": int(st["quality"]) if st["codec"] == "jpeg" else None,
        "png_level": int(st["png_level"]) if st["codec"] == "png" else None,
    }


def layout_dict(layout: Layout, image_size: int) -> dict:
    return {"num_images": layout.num_images, "shard_size": layout.shard_size, "num_shards": layout.num_shards,
            "entries_per_image": layout.entries_per_image, "num_entries": layout.num_entries,
            "slots": layout.slots(), "image_size": int(image_size)}


def identity_payload(h: dict) -> dict:
    return {"settings": h["settings"], "sources": {k: h["sources"].get(k) for k in IDENTITY_SOURCES},
            "layout": h["layout"], "version": h.get("version", FORMAT_VERSION)}


def compute_identity(h: dict) -> str:
    blob = json.dumps(identity_payload(h), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def make_header(settings: dict, sources: dict, layout: dict) -> dict:
    h = {"format": "gensis-bank", "version": FORMAT_VERSION, "identity": "", "status": "running",
         "settings": settings, "sources": sources, "layout": layout,
         "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions()}
    h["identity"] = compute_identity(h)
    return h


def read_header(bank: str | Path) -> dict:
    from gensis.folder_kind import require_kind

    path = Path(bank) / HEADER
    require_kind(bank, "bank")
    if not path.is_file():
        if not Path(bank).exists():
            raise UserError(f"bank not found: {bank}")
        raise UserError(f"{bank} is not an augmentation bank (no {HEADER}; make one with `gensis bank generate`)")
    try:
        with reading(f"the bank {bank}"):  # a refused read says so, not "damaged"
            h = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} (damaged: {type(e).__name__})") from None
    if not isinstance(h, dict) or h.get("format") != "gensis-bank":
        raise UserError(f"{path} is not a gensis bank header")
    if h.get("version") != FORMAT_VERSION:
        raise UserError(f"{bank}: bank format version {h.get('version')}, this gensis reads {FORMAT_VERSION}")
    return h


def write_header(bank: str | Path, h: dict) -> None:
    atomic_write_json(Path(bank) / HEADER, h)


# what a differing source identity means, for the line that refuses to continue a bank (hashes alone say nothing)
SOURCE_MEANING = {
    "sources.data_identity": "the images differ: the data changed since the bank was begun, or is other data",
    "sources.num_images": "another number of images: other data, data.limit, val_fraction or split_seed",
    "sources.encoder_identity": "another conditioning encoder",
    "sources.eldm_identity": "another generator: other E-LDM weights, sampler settings or micro-batch",
}


def header_diff(old: dict, new: dict) -> list[str]:
    """Human-readable differences between the identity-bearing parts of two headers (a source's hash with what
    it means)."""
    a, b = flatten(identity_payload(old)), flatten(identity_payload(new))
    return [f"{k}: bank has {a.get(k)!r}, this command {b.get(k)!r}"
            + (f" ({SOURCE_MEANING[k]})" if k in SOURCE_MEANING else "")
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def layout_of(h: dict) -> Layout:
    lay, st = h["layout"], h["settings"]
    return Layout(int(lay["num_images"]), int(st["num_generative"]), tuple(float(a) for a in st["alphas"]),
                  int(lay["shard_size"]))
