"""Run directories: resolved config, manifest, metrics log and atomic safetensors checkpoints.

Every pipeline stage reads and writes one folder::

    RUN/config.yaml       resolved config (plain YAML)
    RUN/manifest.json     stage, versions, seed, identities (hashes) of the inputs, status
    RUN/metrics.jsonl     one JSON object per logged step/epoch
    RUN/checkpoint.safetensors (+ .json)   last full training state, rewritten atomically every epoch
    RUN/<export>.safetensors               final weights (e.g. teacher_backbone.safetensors)

Writes go to a temporary name in the same folder and are renamed with ``os.replace`` (atomic on POSIX),
so a kill at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors.torch import load_file, save_file

from gensis.errors import UserError


def atomic_write_bytes(path: str | os.PathLike, data: bytes | Iterable[bytes]) -> None:
    """Write ``data`` (bytes, or pieces written in order) to a temporary name, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for piece in ([data] if isinstance(data, (bytes, bytearray, memoryview)) else data):
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomic ``safetensors`` save (tensors made contiguous and moved to CPU)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(flat, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except Exception as e:
        raise UserError(f"cannot read {path}: {e}") from None


def file_hash(path: str | os.PathLike, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("gensis", "torch", "torchvision", "timm", "diffusers", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


class RunDir:
    """A stage's output folder (see module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict:
        if not self.exists():
            raise UserError(f"{self.path} is not a gensis run directory (no manifest.json)")
        return json.loads(self.manifest_path.read_text())

    def config(self) -> dict:
        import yaml

        p = self.path / "config.yaml"
        if not p.is_file():
            raise UserError(f"{self.path} has no config.yaml")
        return yaml.safe_load(p.read_text())

    def start(self, stage: str, cfg: dict, seed: int, inputs: dict[str, str], resume: bool = False) -> None:
        """Create the folder and write config + manifest (status 'running')."""
        from gensis.config import dump

        self.path.mkdir(parents=True, exist_ok=True)
        if self.exists() and not resume:
            m = self.manifest()
            if m.get("status") == "done":
                raise UserError(f"{self.path} already holds a finished {m.get('stage')} run; use another --out")
        atomic_write_text(self.path / "config.yaml", dump(cfg))
        prev = self.manifest() if (self.exists() and resume) else {}
        manifest = {
            "stage": stage,
            "status": "running",
            "seed": seed,
            "inputs": inputs,
            "versions": versions(),
            "created": prev.get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
        }
        atomic_write_json(self.manifest_path, manifest)

    def finish(self, **extra: Any) -> None:
        m = self.manifest()
        m.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S"), **extra)
        atomic_write_json(self.manifest_path, m)

    def is_done(self) -> bool:
        return self.exists() and self.manifest().get("status") == "done"


LOGGERS = ("jsonl", "tensorboard")
TB_DIR = "tensorboard"


def _tensorboard_writer(folder: Path, purge_step: int | None) -> Any:
    from gensis.tensorboard_log import TensorBoardWriter

    return TensorBoardWriter(folder, purge_step)


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, rows past the restored point are dropped.

    ``logger="tensorboard"`` (or the environment variable ``GENSIS_LOGGER=tensorboard`` when ``logger`` is None)
    also writes TensorBoard event files to ``RUN/tensorboard/``: every number of every row as a scalar named by
    its key, at the row's ``step`` (or ``epoch``), and images given to ``log_image``; on resume TensorBoard
    discards the events past the restored step, as the JSON log does.
    """

    def __init__(self, path: str | os.PathLike, keep_until_step: int | None = None, logger: str | None = None):
        self.path = Path(path)
        if keep_until_step is not None and self.path.exists():
            rows = [json.loads(l) for l in self.path.read_text().splitlines() if l.strip()]
            rows = [r for r in rows if r.get("step", -1) < keep_until_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        elif keep_until_step is None and self.path.exists():
            self.path.unlink()
        self.logger = logger or os.environ.get("GENSIS_LOGGER") or "jsonl"
        if self.logger not in LOGGERS:
            raise UserError(f"unknown logger '{self.logger}'; valid: {', '.join(LOGGERS)}")
        self._tb = None
        if self.logger == "tensorboard":
            folder = self.path.parent / TB_DIR
            if keep_until_step is None and folder.is_dir():  # a fresh run: no events of an earlier one
                for f in folder.glob("events.out.tfevents.*"):
                    f.unlink()
            self._tb = _tensorboard_writer(folder, keep_until_step)

    def log(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            step = int(row.get("step", row.get("epoch", 0)))
            self._tb.add_scalars({k: v for k, v in _numbers(row) if k != "step"}, step)

    @property
    def wants_images(self) -> bool:
        """True when images given to ``log_image`` are written (TensorBoard on)."""
        return self._tb is not None

    def log_image(self, tag: str, image: Any, step: int) -> None:
        """An image (uint8 or float in [0, 1]; (3, H, W) or (H, W, 3)) to TensorBoard; nothing with jsonl."""
        if self._tb is None:
            return
        import numpy as np

        arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
        fmt = "HWC" if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4) else "CHW"
        self._tb.add_image(tag, arr, int(step), dataformats=fmt)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(l) for l in self.path.read_text().splitlines() if l.strip()]


def _numbers(row: dict, prefix: str = "") -> Iterable[tuple[str, float]]:
    """(key, value) of every finite-or-not number of a metrics row; nested dicts as ``outer/inner``."""
    for k, v in row.items():
        if isinstance(v, dict):
            yield from _numbers(v, f"{prefix}{k}/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield f"{prefix}{k}", float(v)
