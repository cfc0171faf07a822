"""Command-line options shared by the evaluations, and what they open: encoder, device, feature cache."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gensis.errors import UserError

ENCODER_HELP = ("a pretraining run directory (its exported backbone), a baseline: 'pixels' (raw pixels) or "
                "'random' (randomly initialised ViT), or timm:NAME=WEIGHTS (a timm ViT with a weights file)")


def add_encoder_options(p: argparse.ArgumentParser, many: bool = False, data_option: str | None = "--train") -> None:
    """--encoder, --backbone, --init-seed, --random-like. ``data_option``: the option whose default is the data of
    the --encoder run (and so of the --random-like run); None where the evaluation has no default data."""
    from gensis.cli.main import CommaList

    p.add_argument("--encoder", required=True, metavar="E[,E...]" if many else "RUN|pixels|random|timm:NAME=W",
                   help=ENCODER_HELP + (" (several side by side: comma-separated or the option repeated)" if many else ""),
                   **({"action": CommaList} if many else {}))
    p.add_argument("--backbone", choices=["teacher", "student"], default="teacher",
                   help="which exported backbone of a run to evaluate (DINO evaluates the teacher)")
    p.add_argument("--init-seed", type=int, default=0, metavar="SEED", help="initialisation seed of --encoder random")
    p.add_argument("--random-like", default=None, metavar="RUN",
                   help="--encoder random gets the architecture of this pretraining run (default: the demo preset's)"
                        + (f" and, without {data_option}, is scored on the run's data, like --encoder RUN"
                           if data_option else ""))


def add_runtime_options(p: argparse.ArgumentParser, json_option: bool = True) -> None:
    if json_option:
        p.add_argument("--json", default=None, metavar="FILE", help="also write the results to FILE (JSON, atomically)")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--feature-batch-size", type=int, default=128, metavar="N",
                   help="images per forward pass when extracting features")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="feature cache folder, or 'none' (default: $GENSIS_CACHE_DIR, else ~/.cache/gensis/features)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (the table, warnings and errors still print), as other commands' --quiet")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice). On cores shared with other busy processes, "
                        "1 thread or the environment variable OMP_WAIT_POLICY=PASSIVE can be several times faster")


def setup_runtime(args):
    """Thread count and device from the options (UserError on bad values); returns the torch device."""
    import torch

    from gensis.device import pick_device

    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if getattr(args, "feature_batch_size", 1) < 1:
        raise UserError(f"--feature-batch-size must be >= 1, got {args.feature_batch_size}")
    for name in ("seed", "init_seed", "split_seed"):  # negative ones were numpy tracebacks (umap, split)
        value = getattr(args, name, None)
        if value is not None and value < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    try:
        device = pick_device(getattr(args, "device", "auto"))
    except RuntimeError as e:
        raise UserError(f"bad --device '{args.device}': {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available")
    return device


def file_in_the_way(folder: str | os.PathLike[str]) -> Path | None:
    """The existing file that keeps ``folder`` from being a folder or from being made (``folder`` itself, or the
    nearest existing path above it when that is a file); None when the folder exists or can be made."""
    p = Path(folder).expanduser()
    for q in (p, *p.parents):  # the nearest existing path must be a folder
        if q.exists():
            return None if q.is_dir() else q
    return None


def check_output_folder(folder: str | os.PathLike[str], option: str,
                        path: str | os.PathLike[str] | None = None) -> None:
    """Before any work: a UserError when the folder an output goes into (``folder``; ``path``: the output named
    by ``option``, when it is a file in that folder) cannot be made because a file is in the way; the work
    would otherwise be done and lost when the output is written."""
    q = file_in_the_way(folder)
    if q is not None:
        raise UserError(f"{option} {path if path is not None else folder} cannot be written: {q} is a file, not a "
                        f"folder; name a path in a folder")


def check_cache_option(args) -> None:
    """A ``--cache`` (or ``$GENSIS_CACHE_DIR``) that is, or lies under, an existing file is refused before any
    work: the cache would silently be off (every write fails)."""
    c = getattr(args, "cache", None)
    where = "--cache"
    if c is None:
        c, where = os.environ.get("GENSIS_CACHE_DIR"), "GENSIS_CACHE_DIR"
    if not c or c.lower() == "none":
        return
    p = Path(c).expanduser()
    q = file_in_the_way(p)
    if q is not None:
        what = "is a file" if q == p else f"lies under the file {q}"
        raise UserError(f"{where} {c} {what}: name a folder for the feature cache (or 'none' to turn it off)")


def feature_cache(args):
    from gensis.eval.features import FeatureCache, default_cache_dir

    c = getattr(args, "cache", None)
    if c is None:
        return FeatureCache(default_cache_dir())
    return FeatureCache(None if c.lower() == "none" else Path(c).expanduser())


def open_encoder(spec: str, args, image_size: int | None = None, device=None):
    """The frozen encoder ``spec`` (see ``ENCODER_HELP``), on ``device``."""
    from gensis.models.encoder import load_encoder

    from gensis.eval.common import check_random_like

    like = getattr(args, "random_like", None)
    check_random_like(like)
    enc = load_encoder(spec, getattr(args, "backbone", "teacher"), image_size=image_size,
                       seed=getattr(args, "init_seed", 0), like=like)
    return enc.to(device) if device is not None else enc


def encoder_specs(text: str) -> list[str]:
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise UserError("--encoder is empty")
    return specs


def require(path: str | Path, what: str) -> Path:
    """``path`` if it exists; else one UserError line naming the missing file or folder."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    return p


def warn(msg: str) -> None:
    print(f"gensis: warning: {msg}", file=sys.stderr)
