"""Batches of uint8 images (B, 3, H, W) + their dataset indices, sharded across DDP ranks.

Augmentation happens afterwards on the training device (``batch_augment``), so a loader only decodes and
resizes. Small array datasets (the builtin ones, ``.npz``) are held as one uint8 tensor and sliced; folders
go through a ``DataLoader`` with worker processes that read images lazily, so nothing large is held in memory.
The order is a permutation drawn from (seed, epoch), split across ranks like ``DistributedSampler``.
"""

from __future__ import annotations

import sys
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from gensis.data.sources import SKIP_HINT, ArrayImageSet, BadImageError, ImageSet, SubsetImageSet
from gensis.data.workers import WorkerLoader
from gensis.errors import UserError, same_on_every_rank
from gensis.data.transforms import to_tensor


def epoch_indices(n: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world: int = 1,
                  shuffle: bool = True, drop_last: bool = True) -> list[np.ndarray]:
    """This rank's batches (per-rank size ``batch_size // world``) for one epoch."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    per_rank = batch_size // world
    n_batches = n // batch_size if drop_last else -(-n // batch_size)
    out = []
    for b in range(n_batches):
        chunk = order[b * batch_size:(b + 1) * batch_size]
        out.append(chunk[rank * per_rank:(rank + 1) * per_rank] if drop_last else chunk[rank::world])
    return out


def check_training_batch(n_images: int, batch_size: int, world: int, limit: int | None) -> None:
    """A UserError unless a trainer's ``optim.batch_size`` splits evenly over the ``world`` processes and
    ``n_images`` (the training set, ``data.limit`` applied) holds at least one whole batch (``drop_last``). Every
    rank of a torchrun job reaches the same verdict: rank 0 alone prints it."""
    with same_on_every_rank():
        _check_training_batch(n_images, batch_size, world, limit)


def _check_training_batch(n_images: int, batch_size: int, world: int, limit: int | None) -> None:
    if batch_size % world:
        raise UserError(f"optim.batch_size={batch_size} must be divisible by the {world} processes")
    if n_images == 0:  # no smaller batch helps ('set optim.batch_size=N, N <= 0' before)
        raise UserError("dataset has no training image (its split holds none): give more images, or another "
                        "split (DATA@train, DATA@all)")
    if n_images < batch_size:
        more = f"a larger data.limit (now {limit})" if limit is not None and n_images >= limit else "more images"
        raise UserError(f"dataset has {n_images} training images, fewer than optim.batch_size={batch_size}: "
                        f"set a smaller batch (optim.batch_size=N, N <= {n_images}) or give {more}")


def _is_array_backed(ds: ImageSet) -> bool:
    while isinstance(ds, SubsetImageSet):
        ds = ds.parent
    return isinstance(ds, ArrayImageSet)


def load_image(ds: ImageSet, i: int, size: int | None) -> torch.Tensor:
    """Image ``i`` of ``ds`` as uint8 (3, S, S), as a folder loader batches it: the short side resized to
    ``size``, then a centre crop (an image already S×S is kept as is); ``size`` None: as stored."""
    x = to_tensor(ds.get(i))  # (3, H, W)
    if size is not None and (x.shape[1] != x.shape[2] or x.shape[1] != size):
        x = v2.functional.center_crop(v2.functional.resize(x, size, antialias=True), [size, size])  # (3, S, S)
    return x


def load_images(ds: ImageSet, idx: "np.ndarray | list[int]", size: int) -> torch.Tensor:
    """Images ``idx`` of ``ds`` as one uint8 (B, 3, S, S) batch, each loaded as ``load_image`` does (a folder's
    images differ in size and shape)."""
    return torch.stack([load_image(ds, int(i), size) for i in idx])  # (B, 3, S, S)


class _Decode(Dataset):
    """Decodes one image in a worker; an unreadable file comes back as its error message, not an exception, so
    that the batch's other images can still be used when unreadable images are skipped (other errors, e.g. a
    tile's slide moved since tiling, come back through ``WorkerLoader`` as the exception raised)."""

    def __init__(self, ds: ImageSet, size: int | None):
        self.ds, self.size = ds, size

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str | None]:
        try:
            x = load_image(self.ds, i, self.size)
        except BadImageError as e:
            return None, i, str(e)
        return x, i, None


def _collate(items: list) -> tuple[torch.Tensor | None, torch.Tensor, list[str]]:
    good = [(x, i) for x, i, err in items if err is None]
    errors = [err for _, _, err in items if err is not None]
    if not good:
        return None, torch.zeros(0, dtype=torch.int64), errors
    return torch.stack([x for x, _ in good]), torch.tensor([i for _, i in good], dtype=torch.int64), errors


def _root(ds: ImageSet) -> ImageSet:
    while getattr(ds, "parent", None) is not None:
        ds = ds.parent
    return ds


class ImageBatches:
    """Iterate an ImageSet in batches of (uint8 (B,3,S,S), indices (B,)) for a given epoch."""

    def __init__(self, ds: ImageSet, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 load_size: int | None = None, num_workers: int = 0, shuffle: bool = True, drop_last: bool = True):
        self.ds, self.batch_size, self.seed, self.rank, self.world = ds, batch_size, seed, rank, world
        self.shuffle, self.drop_last, self.num_workers = shuffle, drop_last, num_workers
        self.load_size = load_size
        self.skipped: set[str] = set()  # unreadable images met and skipped (data.skip_bad_images)
        self._array: torch.Tensor | None = None
        if _is_array_backed(ds) and len(ds) * 3 * (load_size or 64) ** 2 < 4e9:
            arr = torch.from_numpy(ds.stack()).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
            if load_size is not None and arr.shape[-2] != arr.shape[-1]:  # as load_image: short side, centre crop
                arr = torch.cat([v2.functional.center_crop(v2.functional.resize(c, load_size, antialias=True),
                                                           [load_size, load_size]) for c in arr.split(4096)])
            elif load_size is not None and arr.shape[-1] != load_size:
                arr = torch.cat([v2.functional.resize(c, [load_size, load_size], antialias=True)
                                 for c in arr.split(4096)])
            self._array = arr

    def __len__(self) -> int:
        n = len(self.ds)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = epoch_indices(len(self.ds), self.batch_size, epoch, self.seed, self.rank, self.world,
                                self.shuffle, self.drop_last)
        if self._array is not None:
            for idx in batches:
                t = torch.from_numpy(idx)
                yield self._array[t], t
            return
        dl = WorkerLoader(_Decode(self.ds, self.load_size), batch_sampler=[b.tolist() for b in batches],
                          num_workers=self.num_workers, persistent_workers=False, collate_fn=_collate)
        # skipping drops images from training batches; where every image needs an output (features, latents:
        # no drop_last), a missing one would misalign the rest, so it stays an error
        skip = getattr(_root(self.ds), "skip_bad", False) and self.drop_last
        for images, idx, errors in dl:
            if errors:
                if not skip:
                    raise UserError(f"{errors[0]}; {SKIP_HINT}")  # a training stage adds how to resume
                for e in errors:
                    if e not in self.skipped:
                        self.skipped.add(e)
                        print(f"[gensis] skipped ({len(self.skipped)} so far): {e}", file=sys.stderr, flush=True)
            if images is not None:
                yield images, idx
