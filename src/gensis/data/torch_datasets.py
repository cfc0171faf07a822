"""gensis data as ``torch.utils.data.Dataset`` objects, for anyone's own training code.

``ImageDataset(image_set, transform)``  (``ImageSet.as_torch_dataset(transform)``): item i is
    ``(transform(image), label)``; the image is a uint8 tensor (3, H, W) (what torchvision v2 transforms take),
    the label an int (−1 for unlabeled data).

``BankDataset(bank, data=None, transform=None)``: item i is a dict holding, for real image i of the split the
bank was generated from,

    image          the real image                                   transform(uint8 (3, H, W))
    generated      its K generative augmentations                   stacked: (K, ...) or a list of K
    interpolated   its interpolated augmentation at every stored α  stacked: (A, ...) or a list of A
    alpha          the stored α values                              float32 (A,)
    partner        the secondary (partner) real image of the interpolations  transform(uint8 (3, H, W))
    partner_index  its index in the split                           int
    index, label   i and its class (−1 when unlabeled)              int

The interpolated image at α is the E-LDM's image of slerp(α·e_i, (1−α)·e_partner) (paper Sec. 9.5.2), so
α = 1 is image i's side. Both datasets pickle without open files, so ``DataLoader(..., num_workers=N)`` works
with any start method; each worker opens the bank's shards it touches (memory-mapped, read-only).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gensis.data.sources import ImageSet, open_data
from gensis.errors import UserError

Transform = Callable[[torch.Tensor], Any]


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()  # (3, H, W) uint8


def _stack(items: list[Any]) -> Any:
    """Stack equally-shaped tensors into one (N, ...) tensor; anything else stays a list."""
    if items and all(isinstance(x, torch.Tensor) for x in items) and len({x.shape for x in items}) == 1:
        return torch.stack(items)
    return items


class ImageDataset(Dataset[tuple[Any, int]]):
    """An ``ImageSet`` as a torch Dataset: item i is ``(transform(uint8 (3, H, W)), label)``."""

    def __init__(self, images: ImageSet, transform: Transform | None = None):
        self.images = images
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = i % len(self)
        x = _chw(self.images.get(i))
        labels = self.images.labels
        return (self.transform(x) if self.transform is not None else x), int(labels[i]) if labels is not None else -1


class BankDataset(Dataset[dict[str, Any]]):
    """Real images with their bank entries (see module docstring).

    ``data``: the dataset the bank was generated from, as an ``ImageSet`` or a ``--data`` string; default: the
    one recorded in the bank (same split, ``limit``, ``split_seed``). It must be exactly that split (checked by
    content hash), because bank entries are addressed by position in it.
    """

    def __init__(self, bank: str | os.PathLike[str], data: ImageSet | str | None = None,
                 transform: Transform | None = None):
        from gensis.bank.reader import BankReader

        self.reader = BankReader(bank, decode_threads=0)
        self.images = self._open(data)
        self.reader.check_dataset(self.images)
        self.transform = transform
        self.alphas = np.asarray(self.reader.alphas, np.float64)

    def _open(self, data: ImageSet | str | None) -> ImageSet:
        if isinstance(data, ImageSet):
            return data
        src = self.reader.header["sources"]
        spec = data if data is not None else src.get("data")
        if not spec:
            raise UserError(f"bank {self.reader.path} does not record its dataset; pass data=")
        if data is None and not str(spec).startswith("builtin:") and not Path(str(spec).split("@")[0]).exists():
            raise UserError(f"bank {self.reader.path} was generated from '{spec}', which is not here; pass data=")
        return open_data(str(spec), "train", src.get("val_fraction", 0.2), src.get("split_seed", 0), src.get("limit"))

    @property
    def num_generative(self) -> int:
        return self.reader.num_generative

    def __len__(self) -> int:
        return len(self.images)

    def _t(self, x: torch.Tensor) -> Any:
        return self.transform(x) if self.transform is not None else x

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = i % len(self)
        k = self.reader.num_generative
        idx = np.array([i])
        gen = self.reader.generative_batch(np.repeat(idx, k), np.arange(k))  # (K, 3, S, S) uint8
        labels = self.images.labels
        item: dict[str, Any] = {
            "index": i, "label": int(labels[i]) if labels is not None else -1,
            "image": self._t(_chw(self.images.get(i))),
            "generated": _stack([self._t(g) for g in gen]),
        }
        if len(self.alphas):
            interp, sec = self.reader.interpolated_batch(np.repeat(idx, len(self.alphas)), self.alphas)  # (A, 3, S, S)
            partner = int(sec[0])
            item.update(interpolated=_stack([self._t(x) for x in interp]),
                        alpha=torch.tensor(self.alphas, dtype=torch.float32),
                        partner=self._t(_chw(self.images.get(partner))), partner_index=partner)
        return item
