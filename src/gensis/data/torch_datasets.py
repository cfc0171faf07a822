"""gensis data as ``torch.utils.data.Dataset`` objects, for anyone's own training code.

``ImageDataset(image_set, transform, size=None)``  (``ImageSet.as_torch_dataset(transform, size=None)``): item i
    is ``(transform(image), label)``; the image is a uint8 tensor (3, H, W) (what torchvision v2 transforms take),
    the label an int (−1 for unlabeled data). ``size=S``: the image at (3, S, S), loaded as gensis loads a folder
    (short side resized to S, then a centre crop; an S×S image unchanged), so a folder of mixed sizes batches.
    Without ``size`` and without a transform, a set whose images differ in size is refused at construction (one
    line naming ``size=``), not by the DataLoader's collation ('stack expects each tensor to be equal size').

``BankDataset(bank, data=None, transform=None, resize=True)``: item i is a dict holding, for real image i of the
split the bank was generated from,

    image          the real image                                   transform(uint8 (3, S, S))
    generated      its K generative augmentations                   stacked: (K, ...) or a list of K
    interpolated   its interpolated augmentation at every stored α  stacked: (A, ...) or a list of A
    alpha          the stored α values                              float32 (A,)
    partner        the secondary (partner) real image of the interpolations  transform(uint8 (3, S, S))
    partner_index  its index in the split                           int
    index, label   i and its class (−1 when unlabeled)              int
    generated_weight, interpolated_weight   sampling weight of each generative entry (K,) and interpolation (A,),
                   float32: 1 without a fidelity filter; with one, what ``gensis pretrain --bank`` draws by
                   (0 = filtered out, else 1 or the score with ``weighting="score"``)

Real images (``image``, ``partner``) come at the bank's image size S, as its synthetic ones, loaded as the bank's
generation and pretraining load a folder's images: the short side resized to S, then a centre crop (an image
already S×S is unchanged), so items of a folder of mixed sizes batch in a ``DataLoader`` without a transform.
``resize=False``: as stored (H×W, any size; your transform must then make them one size for default collation).

The fidelity filters are those of pretraining (``gen.bank_min_score`` / ``bank_keep_quantile`` /
``bank_weighting``: ``BankDataset(bank, min_score=..., keep_quantile=..., weighting=...)``), computed by the same
function (``gensis.bank.scores.entry_weights``); they need a bank with scores.

The interpolated image at α is the E-LDM's image of slerp(α·e_i, (1−α)·e_partner) (paper Sec. 9.5.2), so
α = 1 is image i's side. Both datasets pickle without open files, so ``DataLoader(..., num_workers=N)`` works
with any start method; each worker opens the bank's shards it touches (memory-mapped, read-only).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gensis.data.sources import DataSpec, ImageSet, open_data, rgba_to_rgb
from gensis.errors import UserError
from gensis.indices import index_item

Transform = Callable[[torch.Tensor], Any]


def _chw(img: np.ndarray) -> torch.Tensor:
    from gensis.data.transforms import to_tensor

    return to_tensor(img)  # (3, H, W) uint8


def _stack(items: list[Any]) -> Any:
    """Stack equally-shaped tensors into one (N, ...) tensor; anything else stays a list."""
    if items and all(isinstance(x, torch.Tensor) for x in items) and len({x.shape for x in items}) == 1:
        return torch.stack(items)
    return items


def _two_sizes(images: ImageSet) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """Two different stored (H, W) sizes among ``images`` (headers only; stops at the first difference), or
    None: all one size, or sizes that are not cheap to know."""
    first = None
    for i in range(len(images)):
        hw = images.stored_size(i)
        if hw is None:
            return None
        if first is None:
            first = hw
        elif hw != first:
            return first, hw
    return None


class ImageDataset(Dataset[tuple[Any, int]]):
    """An ``ImageSet`` as a torch Dataset: item i is ``(transform(uint8 (3, H, W)), label)``; with ``size``,
    uint8 (3, S, S) as gensis loads a folder (short side to S, centre crop)."""

    def __init__(self, images: ImageSet, transform: Transform | None = None, *, size: int | None = None):
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
            raise UserError(f"size must be a positive int (images at size×size) or None (as stored), got {size!r}")
        if size is None and transform is None:
            two = _two_sizes(images)
            if two is not None:
                (h1, w1), (h2, w2) = two
                raise UserError(f"{images.name}: images differ in size ({w1}x{h1}, {w2}x{h2} ...), so a DataLoader "
                                f"cannot batch them: pass size=S (short side resized to S, then a centre crop, as "
                                f"gensis loads a folder) or a transform that makes them one size")
        self.images = images
        self.transform = transform
        self.size = None if size is None else int(size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from gensis.data.loader import load_image

        i = index_item(i, len(self))
        x = load_image(self.images, i, self.size)
        labels = self.images.labels
        return (self.transform(x) if self.transform is not None else x), int(labels[i]) if labels is not None else -1


class BankDataset(Dataset[dict[str, Any]]):
    """Real images with their bank entries (see module docstring).

    ``data``: the dataset the bank was generated from, as an ``ImageSet`` or a ``--data`` string; default: the
    one recorded in the bank (same split, ``limit``, ``split_seed``). It must be exactly that split (checked by
    content hash), because bank entries are addressed by position in it. ``resize``: real images at the bank's
    image size (default) or as stored (``False``).
    """

    def __init__(self, bank: str | os.PathLike[str], data: ImageSet | str | None = None,
                 transform: Transform | None = None, *, min_score: float | None = None,
                 keep_quantile: float | None = None, weighting: str = "none", resize: bool = True):
        from gensis.bank.reader import BankReader

        if not isinstance(resize, bool):
            raise UserError(f"resize must be True or False (real images at the bank's image size, or as stored), "
                            f"got {resize!r}")
        self.resize = resize
        self.reader = BankReader(os.path.expanduser(os.fspath(bank)), decode_threads=0)
        self.images = self._open(data)
        self.reader.check_dataset(self.images)
        self.transform = transform
        self.alphas = np.asarray(self.reader.alphas, np.float64)
        self.gen_weight, self.interp_weight = self._weights(min_score, keep_quantile, weighting)

    def _weights(self, min_score: float | None, keep_quantile: float | None,
                 weighting: str) -> tuple[np.ndarray, np.ndarray]:
        """Sampling weights (N, K) and (N, A) of the entries: pretraining's fidelity filter, or ones."""
        from gensis.bank.scores import entry_weights, filter_active

        k, n = self.reader.num_generative, len(self.images)
        g = {"bank_min_score": min_score, "bank_keep_quantile": keep_quantile, "bank_weighting": weighting}
        if not filter_active(g):
            return np.ones((n, k), np.float32), np.ones((n, len(self.alphas)), np.float32)
        w = entry_weights(self.reader.scores(), k, g)  # (N, E) in slot order
        interp = w[:, self.reader.layout.alpha_slot(self.alphas)] if len(self.alphas) else w[:, k:k]  # (N, A)
        return w[:, :k].astype(np.float32), interp.astype(np.float32)

    def _open(self, data: ImageSet | str | None) -> ImageSet:
        if isinstance(data, ImageSet):
            return data
        src = self.reader.header["sources"]
        spec = data if data is not None else src.get("data")
        if not spec:
            raise UserError(f"bank {self.reader.path} does not record its dataset; pass data=")
        local = str(spec).startswith(("builtin:", "python:")) or Path(DataSpec.parse(str(spec)).source).exists()
        if data is None and not local:
            raise UserError(f"bank {self.reader.path} was generated from '{spec}', which is not here; pass data=")
        return open_data(str(spec), "train", src.get("val_fraction", 0.2), src.get("split_seed", 0), src.get("limit"),
                         self.reader.skip_bad_images)  # read as the bank's generation read it

    @property
    def num_generative(self) -> int:
        return self.reader.num_generative

    def __len__(self) -> int:
        return len(self.images)

    def _t(self, x: torch.Tensor) -> Any:
        return self.transform(x) if self.transform is not None else x

    def _real(self, i: int) -> Any:
        """Real image ``i``: (3, S, S) at the bank's size, loaded as its generation loaded it (or as stored)."""
        from gensis.data.loader import load_image

        return self._t(load_image(self.images, i, self.reader.image_size if self.resize else None))

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = index_item(i, len(self))
        k = self.reader.num_generative
        idx = np.array([i])
        gen = self.reader.generative_batch(np.repeat(idx, k), np.arange(k))  # (K, 3, S, S) uint8
        labels = self.images.labels
        item: dict[str, Any] = {
            "index": i, "label": int(labels[i]) if labels is not None else -1,
            "image": self._real(i),
            "generated": _stack([self._t(g) for g in gen]),
            "generated_weight": torch.from_numpy(self.gen_weight[i].copy()),
        }
        if len(self.alphas):
            interp, sec = self.reader.interpolated_batch(np.repeat(idx, len(self.alphas)), self.alphas)  # (A, 3, S, S)
            partner = int(sec[0])
            item.update(interpolated=_stack([self._t(x) for x in interp]),
                        alpha=torch.tensor(self.alphas, dtype=torch.float32),
                        interpolated_weight=torch.from_numpy(self.interp_weight[i].copy()),
                        partner=self._real(partner), partner_index=partner)
        return item


# ---------------------------------------------------------------------------------------------------------
# any image collection → ImageSet


_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA


def _float_to_uint8(t: torch.Tensor, where: str) -> torch.Tensor:
    """A float image tensor in [0, 1] → uint8; unscaled (0..255) or normalized values are a ``UserError``
    (the encoder's own rule, ``gensis.models.encoder.check_images``)."""
    from gensis.models.encoder import check_unit_range

    t = t.float()
    check_unit_range(t, where)
    return (t.clamp(0, 1) * 255).round().to(torch.uint8)


def _to_hwc_uint8(x: Any, where: str = "") -> np.ndarray:
    """One image → H×W×3 uint8: a PIL image (any mode), an image file path, an H×W(×C) array, or a (C, H, W)
    tensor (uint8, or float in [0, 1]); items ``(image, label, ...)`` give their first element. Anything else
    (a dict, a number, a wrong shape) is a one-line ``UserError`` starting with ``where``."""
    from gensis.data.sources import decode_image, pil_to_rgb

    if isinstance(x, (tuple, list)) and x:  # (image, label, ...) items
        x = x[0]
    if isinstance(x, Mapping):
        raise UserError(f"{where}is a dict (keys {', '.join(map(str, list(x)[:5]))}), not an image: items must be "
                        f"an image or (image, label); e.g. wrap the dataset to return (item['image'], item['label'])")
    if isinstance(x, (str, os.PathLike)):
        return decode_image(Path(x))
    if hasattr(x, "convert") and hasattr(x, "mode"):  # a PIL image
        return pil_to_rgb(x)
    channels_first = isinstance(x, torch.Tensor)  # torch's convention (C, H, W), numpy's (H, W, C)
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.is_floating_point():
            t = _float_to_uint8(t, where)
        arr = t.numpy()
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        raise UserError(f"{where}is a {type(x).__name__}, not an image (a PIL image, an image file path, an "
                        f"H×W×3 array or a (3, H, W) tensor)")
    if arr.dtype == np.bool_ or arr.dtype.kind not in "uif":
        raise UserError(f"{where}is an array of {arr.dtype}, not an image")
    if arr.dtype.kind == "f":
        arr = _float_to_uint8(torch.from_numpy(np.array(arr, np.float32)), where).numpy()
    elif arr.dtype != np.uint8:
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 255:
            raise UserError(f"{where}integer image with values in [{lo}, {hi}]: give uint8 (0..255)")
        arr = arr.astype(np.uint8)
    if arr.ndim == 3:
        first, last = arr.shape[0] in _CHANNELS, arr.shape[2] in _CHANNELS
        if channels_first and first or not last and first:
            arr = arr.transpose(1, 2, 0)  # (C, H, W) → (H, W, C)
        elif not last:
            raise UserError(f"{where}has shape {tuple(arr.shape)}: an image needs 1, 3 or 4 channels, as (C, H, W) "
                            f"or (H, W, C)")
    elif arr.ndim == 2:
        arr = arr[:, :, None]
    else:
        raise UserError(f"{where}has shape {tuple(arr.shape)}, not an image ((H, W), (H, W, C) or (C, H, W))")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UserError(f"{where}is an empty image of shape {tuple(arr.shape)}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:  # RGBA: composited over white, as the same picture read from an RGBA PNG
        return rgba_to_rgb(arr)
    return np.ascontiguousarray(arr)


class TorchImageSet(ImageSet):
    """Any map-style torch Dataset of images (items: an image, or a tuple whose first element is the image)
    as an ``ImageSet``. Labels come from ``dataset.targets`` (torchvision's convention) or ``labels=``."""

    def __init__(self, dataset: Dataset[Any], labels: Any = None, classes: list[str] | None = None,
                 name: str | None = None):
        self.dataset = dataset
        targets = labels if labels is not None else getattr(dataset, "targets", None)
        self.labels = None if targets is None else _int_labels(targets, len(dataset))  # type: ignore[arg-type]
        self.groups = None
        self.classes = classes if classes is not None else getattr(dataset, "classes", None)
        self.name = name or type(dataset).__name__
        self._identity: str | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def get(self, i: int) -> np.ndarray:
        try:
            item = self.dataset[i]
        except Exception as e:
            if not _raised_in_pil(e):  # the dataset's own bug: its traceback is the useful report
                raise
            # its loader (torchvision's ImageFolder: PIL) on an unreadable file: one line naming the file
            file = _item_file(self.dataset, i)
            why = str(e).splitlines()[0] if str(e) else "unreadable"
            raise UserError(f"cannot read image {file or f'item {i} of {self.name}'}: {type(e).__name__}: {why}; "
                            f"{TORCH_SKIP_HINT}") from None
        return _to_hwc_uint8(item, f"item {i} of {self.name}: ")

    def stored_size(self, i: int) -> tuple[int, int] | None:
        """(H, W) of item ``i`` of a list or tuple of images (file paths from their headers), which costs no
        decoding; None for any other Dataset, whose ``__getitem__`` may decode or augment."""
        from gensis.data.sources import header_size

        if not isinstance(self.dataset, (list, tuple)):
            return None
        item = self.dataset[i]
        if isinstance(item, (tuple, list)) and item:  # (image, label, ...) items
            item = item[0]
        if isinstance(item, (str, os.PathLike)):
            return header_size(item)
        if hasattr(item, "convert") and hasattr(item, "size"):  # a PIL image: (W, H)
            return int(item.size[1]), int(item.size[0])
        h, w = self.get(i).shape[:2]  # an array or a tensor, in memory
        return int(h), int(w)

    @property
    def identity(self) -> str:
        """Content hash of every image (and label): computed once, reading the whole dataset."""
        if self._identity is None:
            import hashlib

            h = hashlib.sha256(f"{len(self)}".encode())
            for i in range(len(self)):
                im = self.get(i)
                h.update(str(im.shape).encode())
                h.update(im.data)
            if self.labels is not None:
                h.update(np.ascontiguousarray(self.labels).data)
            self._identity = h.hexdigest()[:16]
        return self._identity


TORCH_SKIP_HINT = ("fix or remove it, or give the folder's path instead of the Dataset: gensis checks a folder's "
                   "images first and skips unreadable ones with data.skip_bad_images=true (--skip-bad-images; "
                   "gensis.open_data(folder, skip_bad_images=True))")


def _raised_in_pil(e: BaseException) -> bool:
    """Whether ``e`` was raised inside PIL (decoding an image), not in the dataset's own code."""
    tb = e.__traceback__
    while tb is not None:
        if "PIL" in Path(tb.tb_frame.f_code.co_filename).parts:
            return True
        tb = tb.tb_next
    return False


def _item_file(dataset: Any, i: int) -> str | None:
    """The file behind item ``i`` of a torchvision-style dataset (``samples`` / ``imgs``: (path, target) pairs,
    through ``torch.utils.data.Subset``s), else None."""
    for _ in range(16):
        if not (hasattr(dataset, "indices") and hasattr(dataset, "dataset")):
            break
        try:
            i, dataset = int(dataset.indices[i]), dataset.dataset  # a Subset
        except Exception:
            return None
    samples = getattr(dataset, "samples", None) or getattr(dataset, "imgs", None)
    try:
        return str(samples[i][0])  # type: ignore[index]
    except Exception:
        return None


def _int_labels(targets: Any, n: int) -> np.ndarray:
    """Integer class labels (N,) from ``targets`` / ``labels=``: one per image, integers >= 0."""
    try:
        arr = np.asarray(targets.tolist() if isinstance(targets, torch.Tensor) else targets)
    except Exception as e:  # ragged sequences and the like
        raise UserError(f"labels must be one integer per image ({type(e).__name__}: {e})") from None
    if arr.ndim != 1 or len(arr) != n:
        raise UserError(f"labels must be one integer per image: got shape {arr.shape} for {n} images")
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(np.isfinite(arr))
                                           and np.all(arr == np.round(arr))):
        example = arr[0] if len(arr) else ""
        raise UserError(f"labels must be integers (class indices), got {arr.dtype} (e.g. {example!r}); "
                        f"map class names to indices first")
    arr = arr.astype(np.int64)
    if len(arr) and arr.min() < 0:
        raise UserError(f"labels must be class indices >= 0, got {int(arr.min())}")
    return arr


def as_image_set(data: Any, labels: Any = None) -> ImageSet:
    """An ``ImageSet`` from an ImageSet, a ``--data`` string / path (whole source: ``@all`` unless a split is
    named), an N×H×W(×3) uint8 array, a uint8 (N, 3, H, W) tensor, or any map-style torch Dataset of images."""
    from gensis.data.sources import ArrayImageSet, image_array

    if labels is not None and isinstance(data, (ImageSet, str, os.PathLike)):  # never dropped silently
        raise UserError("labels= is for arrays, tensors and torch Datasets: an ImageSet or a --data source "
                        "brings its own labels")
    if isinstance(data, ImageSet):
        return data
    if isinstance(data, (str, os.PathLike)):
        return open_data(str(data), "all")
    if isinstance(data, torch.Tensor):
        data = _tensor_batch(data)
    if isinstance(data, np.ndarray):
        data = image_array(data, "the image array")
        lab = None if labels is None else _int_labels(labels, len(data))  # one integer >= 0 per image
        return ArrayImageSet(np.ascontiguousarray(data), lab, None, None, "array")
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        out = TorchImageSet(data, labels)
        if len(out) == 0:
            raise UserError(f"the {out.name} holds no images")
        out.get(0)  # a dataset of things that are not images fails here, naming its item 0
        return out
    one = " (one image? give a list: [image])" if hasattr(data, "convert") and hasattr(data, "mode") else ""
    raise UserError(f"cannot use a {type(data).__name__} as images{one}: give an ImageSet, a --data string, an "
                    f"array, a (N, 3, H, W) tensor, a list of images or a torch Dataset")


def _tensor_batch(t: torch.Tensor) -> np.ndarray:
    """A batch tensor → N×H×W×3 uint8: (N, C, H, W) (torch's layout) or (N, H, W, C), C in 1, 3, 4; uint8, or
    float in [0, 1] (as the encoder takes)."""
    t = t.detach().cpu()
    if t.ndim != 4:
        hint = " (one image? add a batch dimension: x[None])" if t.ndim == 3 else ""
        raise UserError(f"an image tensor must be a batch (N, 3, H, W), got shape {tuple(t.shape)}{hint}")
    if t.shape[1] in _CHANNELS:
        t = t.permute(0, 2, 3, 1)  # (N, C, H, W) → (N, H, W, C)
    elif t.shape[3] not in _CHANNELS:
        raise UserError(f"an image tensor must be (N, 3, H, W) (or (N, H, W, 3)), got shape {tuple(t.shape)}")
    if t.is_floating_point():
        t = _float_to_uint8(t, "")
    elif t.dtype != torch.uint8:
        raise UserError(f"image tensors must be uint8 (0..255) or float (0..1), got {t.dtype}")
    if t.shape[3] == 1:
        t = t.expand(-1, -1, -1, 3)
    if t.shape[3] == 4:  # RGBA: composited over white, as the same picture read from an RGBA PNG
        return rgba_to_rgb(t.numpy())
    return np.ascontiguousarray(t.numpy())  # (N, H, W, 3)
