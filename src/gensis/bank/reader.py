"""Random access to a bank during training, from any number of processes and DataLoader workers.

``BankReader(path)`` reads only ``bank.json`` when created. Shard files are opened on first use and memory-mapped
(read-only), so pages are shared through the OS page cache and nothing is loaded whole; an open reader pickles
without its open files (each DataLoader worker re-opens what it touches). PNG/WebP/JPEG entries are decoded by
a small thread pool (Pillow releases the GIL while decoding); raw entries are views into the memory map.
"""

from __future__ import annotations

import mmap
import os
import warnings
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gensis.bank.format import ENTRY_DTYPE, SHARD_DIR, Codec, ShardFormatError, read_tail, shard_name
from gensis.bank.header import layout_of, read_header
from gensis.bank.plan import KIND_GEN, KIND_INTERP
from gensis.bank.scores import SCORE_DIR, has_scores, read_scores, score_name
from gensis.errors import UserError
from gensis.indices import index_array

if TYPE_CHECKING:
    from gensis.data.sources import ImageSet


class _Shard:
    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "rb")
        size = os.fstat(self.file.fileno()).st_size
        self.mm = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        self.rows, self.meta, _ = read_tail(self.mm, size)

    def payload(self, row: int) -> memoryview:
        r = self.rows[row]
        off, n = int(r["offset"]), int(r["length"])
        return memoryview(self.mm)[off:off + n]

    def close(self) -> None:
        try:
            if isinstance(self.mm, mmap.mmap):
                self.mm.close()
        except BufferError:  # a decoded raw view still points into the map: let GC close it
            pass
        self.file.close()


def _paired(idx: np.ndarray, other: np.ndarray, name: str) -> np.ndarray:
    """``other`` with one value per image index (a single value is repeated); other lengths are refused."""
    if len(other) == len(idx):
        return other
    if len(other) == 1:
        return np.repeat(other, len(idx))
    raise UserError(f"{name} has {len(other)} values for {len(idx)} image indices (idx): give one value or one "
                    f"per index")


class BankReader:
    """Entries of an augmentation bank by (image index, kind, k or α); indices are positions in the dataset split
    the bank was generated from.

    Attributes: ``num_generative`` (K), ``alphas``, ``identity``, ``image_size``, ``num_images``, ``header``.
    """

    def __init__(self, path: str | os.PathLike[str], decode_threads: int | None = None, max_open: int = 128):
        self.path = Path(path)
        self.header = read_header(self.path)
        self.layout = layout_of(self.header)
        self.identity: str = self.header["identity"]
        self.num_generative: int = self.layout.num_generative
        self.alphas: list[float] = list(self.layout.alphas)
        self.image_size: int = int(self.header["layout"]["image_size"])
        self.num_images: int = self.layout.num_images
        st = self.header["settings"]
        self.codec = Codec(st["codec"], st.get("quality") or 95, st.get("png_level") or 1)
        self.decode_threads = min(4, os.cpu_count() or 1) if decode_threads is None else decode_threads
        self.max_open = max_open
        self._shards: OrderedDict[int, _Shard] = OrderedDict()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()
        self._warned = False

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return (f"BankReader({str(self.path)!r}: {self.num_images} images, K={self.num_generative}, "
                f"alphas={self.alphas}, {self.image_size}px {self.codec.name}, identity {self.identity})")

    # pickling into DataLoader workers: no open files, no threads
    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["_shards"], d["_pool"] = OrderedDict(), None
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._pid = os.getpid()

    def close(self) -> None:
        for sh in self._shards.values():
            sh.close()
        self._shards.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    @property
    def skip_bad_images(self) -> bool:
        """Whether the bank was generated with ``data.skip_bad_images`` (its ``config.yaml``): its dataset is then
        opened the same way (unreadable images left out), so it has the identity the bank records."""
        cfg = self.path / "config.yaml"
        if not cfg.is_file():
            return False
        from gensis.rundir import RunDir

        data = RunDir(self.path).config().get("data") or {}
        return bool(data.get("skip_bad_images", False)) if isinstance(data, dict) else False

    # -----------------------------------------------------------------------------------------------------
    # checks

    def missing_shards(self) -> list[int]:
        d = self.path / SHARD_DIR
        return [s for s in range(self.layout.num_shards) if not (d / shard_name(s)).is_file()]

    def check_dataset(self, ds: ImageSet) -> None:
        """Raise UserError unless the bank was made from exactly this dataset split and is complete."""
        src = self.header["sources"]
        if ds.identity != src["data_identity"] or len(ds) != self.num_images:
            raise UserError(
                f"bank {self.path} was generated from dataset '{src.get('dataset_name')}' ({src['num_images']} images, "
                f"identity {src['data_identity']}), but training uses '{getattr(ds, 'name', '?')}' ({len(ds)} images, "
                f"identity {ds.identity}): train on the bank's images ({self._data_options()}), or generate the bank "
                f"from the same --data with the same data.limit, val_fraction and split_seed")
        from gensis.data.sources import content_change

        changed = content_change(src.get("data_content"), ds.content)
        if changed is not None:
            raise UserError(f"bank {self.path} was generated from other images than '{getattr(ds, 'name', '?')}' "
                            f"holds now ({changed}): generate the bank again from these images, or restore them")
        self.check_complete()

    def _data_options(self) -> str:
        """The ``--data`` and ``data.*`` settings that read the images this bank was made from."""
        src = self.header["sources"]
        opts = [f"--data {src.get('data')}"] + [f"data.{k}={'null' if src.get(k) is None else src.get(k)}"
                                                 for k in ("limit", "val_fraction", "split_seed") if k in src]
        return " ".join(opts + (["data.skip_bad_images=true"] if self.skip_bad_images else []))

    def check_encoder(self, encoder_identity: str) -> None:
        src = self.header["sources"]
        if encoder_identity != src["encoder_identity"]:
            raise UserError(f"bank {self.path} was generated with encoder {src['encoder_identity']}, "
                            f"not {encoder_identity}")

    def check_complete(self) -> None:
        missing = self.missing_shards()
        if missing:
            first = ", ".join(shard_name(s) for s in missing[:3])
            raise UserError(f"bank {self.path} is incomplete: {len(missing)} of {self.layout.num_shards} shards missing "
                            f"({first}{', ...' if len(missing) > 3 else ''}); rerun the same `gensis bank generate` "
                            f"command to finish it")

    # -----------------------------------------------------------------------------------------------------
    # access

    def _shard(self, s: int) -> _Shard:
        if self._pid != os.getpid():  # forked: the parent's maps and threads are not ours
            self._shards, self._pool, self._pid = OrderedDict(), None, os.getpid()
        sh = self._shards.get(s)
        if sh is not None:
            self._shards.move_to_end(s)
            return sh
        path = self.path / SHARD_DIR / shard_name(s)
        if not path.is_file():
            raise UserError(f"bank {self.path} has no {shard_name(s)}: rerun `gensis bank generate` to finish it")
        try:
            sh = _Shard(path)
        except ShardFormatError as e:
            raise UserError(f"bank shard {path} is damaged ({e}); run `gensis bank verify {self.path}`") from None
        if sh.meta.get("bank") != self.identity:
            sh.close()
            raise UserError(f"{path} belongs to another bank ({sh.meta.get('bank')}, expected {self.identity})")
        self._shards[s] = sh
        while len(self._shards) > self.max_open:
            self._shards.popitem(last=False)[1].close()
        return sh

    def _images(self, name: str, idx: Any) -> np.ndarray:
        """Image positions as a flat int64 array; floats, bools and out-of-range values are refused (one line)."""
        return index_array(name, idx, self.num_images, " (image positions in the bank's dataset split)")

    def _rows(self, idx: np.ndarray, slot: np.ndarray) -> list[tuple[_Shard, int]]:
        shard, row = self.layout.locate(idx, slot)
        return [(self._shard(int(s)), int(r)) for s, r in zip(shard, row)]

    def _decode_many(self, refs: list[tuple[_Shard, int]]) -> torch.Tensor:
        size = self.image_size

        def one(ref: tuple[_Shard, int]) -> np.ndarray:
            sh, r = ref
            data = sh.payload(r)
            if zlib.crc32(data) != int(sh.rows[r]["crc32"]):  # a payload changed on disk since it was written
                raise UserError(f"bank shard {sh.path} is damaged: the image of row {r} (image "
                                f"{int(sh.rows[r]['primary'])}) does not match its checksum; `gensis bank verify "
                                f"{self.path} --delete-bad`, then `gensis bank generate` with the same --out, "
                                f"regenerates the damaged shards")
            return self.codec.decode(data, size)

        if self.codec.name != "raw" and self.decode_threads > 1 and len(refs) >= 8:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.decode_threads)
            imgs = list(self._pool.map(one, refs))
        else:
            imgs = [one(ref) for ref in refs]
        if not imgs:
            return torch.zeros((0, 3, size, size), dtype=torch.uint8)
        return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()  # (B, 3, S, S)

    def entries(self, idx: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """Manifest rows (``format.ENTRY_DTYPE``) of entries (image index, slot)."""
        idx = self._images("idx", idx)
        slot = index_array("slot", slot, self.layout.entries_per_image, " (the bank's entries per image)")
        refs = self._rows(idx, _paired(idx, slot, "slot"))
        return np.array([sh.rows[r] for sh, r in refs], dtype=ENTRY_DTYPE) if refs else np.zeros(0, ENTRY_DTYPE)

    def generative_batch(self, idx: np.ndarray, k: np.ndarray) -> torch.Tensor:
        """The k-th generative augmentation of each image: uint8 (B, 3, S, S)."""
        idx = self._images("idx", idx)
        k = index_array("k", k, self.num_generative, " (the bank's generative entries per image)")
        refs = self._rows(idx, _paired(idx, k, "k"))
        self._check(refs, idx, KIND_GEN)
        return self._decode_many(refs)

    def interpolated_batch(self, idx: np.ndarray, alpha: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """The interpolated augmentation of each image at the stored α nearest to ``alpha``: (uint8 (B,3,S,S),
        secondary indices (B,))."""
        idx = self._images("idx", idx)
        alpha = np.atleast_1d(np.asarray(alpha, np.float64))
        if alpha.ndim != 1:
            raise UserError(f"alpha must be one value or one per image index, got an array of shape {alpha.shape}")
        alpha = _paired(idx, alpha, "alpha")  # a wrong length is one line naming both lengths
        if not np.isfinite(alpha).all():
            raise UserError(f"alpha must be finite, got {alpha[~np.isfinite(alpha)][0]}")
        slot = self.layout.alpha_slot(alpha)
        if not self._warned and alpha.size:
            off = np.abs(np.asarray(self.alphas)[slot - self.num_generative] - alpha).max()
            if off > 1e-6:
                self._warned = True
                warnings.warn(f"bank {self.path} holds alphas {self.alphas}; requested alphas "
                              f"{sorted(set(np.round(alpha, 6).tolist()))} are served by the nearest stored one",
                              stacklevel=2)
        refs = self._rows(idx, slot)
        self._check(refs, idx, KIND_INTERP)
        sec = np.fromiter((sh.rows[r]["secondary"] for sh, r in refs), dtype=np.int64, count=len(refs))
        return self._decode_many(refs), sec

    @property
    def has_scores(self) -> bool:
        """Whether the bank records fidelity scores (banks made before they existed do not)."""
        return has_scores(self.header)

    def scores(self) -> np.ndarray:
        """Fidelity score of every entry, float32 (N, E) in slot order (``gensis.bank.scores``); UserError for a
        bank without scores."""
        if not self.has_scores:
            raise UserError(f"bank {self.path} has no fidelity scores (made before gensis recorded them): generate it "
                            f"again to filter or weight it by score (gen.bank_min_score / bank_keep_quantile / "
                            f"bank_weighting)")
        lay = self.layout
        parts = []
        for s in range(lay.num_shards):
            start, stop = lay.shard_range(s)
            parts.append(read_scores(self.path / SCORE_DIR / score_name(s), (stop - start) * lay.entries_per_image))
        return np.concatenate(parts).reshape(lay.num_images, lay.entries_per_image)  # (N, E)

    def secondary(self, idx: np.ndarray) -> np.ndarray:
        """The secondary image of each image (the same for all its α)."""
        idx = self._images("idx", idx)
        refs = self._rows(idx, np.full(len(idx), self.num_generative))
        return np.fromiter((sh.rows[r]["secondary"] for sh, r in refs), dtype=np.int64, count=len(refs))

    @staticmethod
    def _check(refs: list[tuple[_Shard, int]], idx: Iterable[int], kind: int) -> None:
        for (sh, r), i in zip(refs, idx):
            row = sh.rows[r]
            if row["primary"] != i or row["kind"] != kind:
                raise UserError(f"bank shard {sh.meta.get('shard')} row {r} holds image {row['primary']} kind "
                                f"{row['kind']}, expected image {i} kind {kind}: run `gensis bank verify`")
