"""The bank's on-disk format (version 1): a header JSON plus one self-contained file per shard.

::

    BANK/bank.json                 header: settings, sources (identities of dataset, encoder, E-LDM), layout,
                                   identity (hash of those three), status running|done; written atomically
    BANK/config.yaml               the resolved config of the command that created the bank
    BANK/groups.npy                (only with gen.secondary=group) the dataset's group of each image
    BANK/embeddings/emb-SSSSSS.npy float32 (n, D) encoder embeddings of shard SSSSSS's images (the generation input)
    BANK/shards/shard-SSSSSS.gsb   the entries of primaries [SSSSSS·shard_size, ...) (see below)

A shard file is written to a temporary name in the same folder and renamed (``os.replace``), so it is either
absent or complete. Layout of ``shard-SSSSSS.gsb`` (all integers little-endian)::

    [payload]  the entries' encoded images back to back (PNG / WebP / JPEG file bytes, or raw H×W×3 uint8)
    [index]    an .npy array (np.lib.format), one row per entry in file order, dtype ENTRY_DTYPE:
               primary i8, secondary i8 (-1 for generative), kind u1 (0 gen, 1 interp), k i2 (gen: k;
               interp: index of alpha), alpha f4 (NaN for generative), seed u8, offset u8, length u8, crc32 u4
    [meta]     UTF-8 JSON: format, version, bank identity, shard, start, stop, codec, image_size, entries
    [footer]   32 bytes: b"GSISBANK", index_offset u8, meta_offset u8, crc32(index+meta) u4, version u4

Every byte is covered by a checksum: each entry's payload by its crc32, index and meta by the footer's.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
MAGIC = b"GSISBANK"
FOOTER = struct.Struct("<8sQQII")  # magic, index_offset, meta_offset, crc32(index+meta), version
CODECS = ("png", "webp", "jpeg", "raw")
ENTRY_DTYPE = np.dtype([
    ("primary", "<i8"), ("secondary", "<i8"), ("kind", "u1"), ("k", "<i2"), ("alpha", "<f4"),
    ("seed", "<u8"), ("offset", "<u8"), ("length", "<u8"), ("crc32", "<u4"),
])
SHARD_DIR, EMB_DIR = "shards", "embeddings"


SHARD_RE = re.compile(r"^shard-(\d{6})\.gsb$")  # shard_name's names


def shard_name(s: int) -> str:
    return f"shard-{s:06d}.gsb"


def emb_name(s: int) -> str:
    return f"emb-{s:06d}.npy"


# ---------------------------------------------------------------------------------------------------------
# image codecs


@dataclass(frozen=True)
class Codec:
    name: str = "png"
    quality: int = 95
    png_level: int = 1

    def encode(self, img: np.ndarray) -> bytes:
        """H×W×3 uint8 → bytes."""
        if self.name == "raw":
            return np.ascontiguousarray(img, dtype=np.uint8).tobytes()
        from PIL import Image

        buf = io.BytesIO()
        im = Image.fromarray(np.ascontiguousarray(img))
        if self.name == "png":
            im.save(buf, format="PNG", compress_level=int(self.png_level))
        elif self.name == "webp":
            im.save(buf, format="WEBP", lossless=True, quality=100, method=0)
        elif self.name == "jpeg":
            im.save(buf, format="JPEG", quality=int(self.quality))
        else:
            raise ValueError(f"unknown codec {self.name!r}; valid: {', '.join(CODECS)}")
        return buf.getvalue()

    def decode(self, data, size: int) -> np.ndarray:
        """bytes (or a buffer) → H×W×3 uint8."""
        if self.name == "raw":
            return np.frombuffer(data, dtype=np.uint8).reshape(size, size, 3)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------
# shard files


def shard_bytes(payloads: list[bytes], rows: np.ndarray, meta: dict) -> list[bytes]:
    """The pieces of a shard file; fills ``rows``' offset, length and crc32 from ``payloads``."""
    lengths = np.fromiter((len(p) for p in payloads), dtype=np.uint64, count=len(payloads))
    rows["length"] = lengths
    rows["offset"] = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.uint64) if len(lengths) else lengths
    rows["crc32"] = [zlib.crc32(p) for p in payloads]
    index_offset = int(lengths.sum())
    buf = io.BytesIO()
    np.lib.format.write_array(buf, rows, allow_pickle=False)
    index = buf.getvalue()
    meta_b = json.dumps({"format": "gensis-bank-shard", "version": FORMAT_VERSION, **meta}, sort_keys=True).encode()
    footer = FOOTER.pack(MAGIC, index_offset, index_offset + len(index), zlib.crc32(index + meta_b), FORMAT_VERSION)
    return [*payloads, index, meta_b, footer]


def write_shard(path: Path, payloads: list[bytes], rows: np.ndarray, meta: dict) -> None:
    """Write a shard atomically: temporary name in the same folder → fsync → ``os.replace``."""
    from gensis.rundir import atomic_write_bytes

    atomic_write_bytes(path, shard_bytes(payloads, rows, meta))


class ShardFormatError(Exception):
    """A shard file that is not a complete, well-formed version-1 shard."""


def read_tail(buf, size: int) -> tuple[np.ndarray, dict, int]:
    """Parse index and meta from a shard's bytes (any buffer: bytes, mmap) of total ``size``.

    Returns (rows, meta, index_offset). Raises ShardFormatError on a torn/foreign file or checksum mismatch.
    """
    if size < FOOTER.size:
        raise ShardFormatError(f"file too short ({size} bytes)")
    magic, index_offset, meta_offset, crc, version = FOOTER.unpack(bytes(buf[size - FOOTER.size:size]))
    if magic != MAGIC:
        raise ShardFormatError("not a gensis bank shard (bad footer magic)")
    if version != FORMAT_VERSION:
        raise ShardFormatError(f"shard format version {version}, this gensis reads {FORMAT_VERSION}")
    if not index_offset <= meta_offset <= size - FOOTER.size:
        raise ShardFormatError("footer offsets out of range")
    tail = bytes(buf[index_offset:size - FOOTER.size])
    if zlib.crc32(tail) != crc:
        raise ShardFormatError("index/meta checksum mismatch")
    try:
        rows = np.lib.format.read_array(io.BytesIO(tail[:meta_offset - index_offset]), allow_pickle=False)
        meta = json.loads(tail[meta_offset - index_offset:].decode())
    except Exception as e:
        raise ShardFormatError(f"cannot parse index/meta: {e}") from None
    if rows.dtype != ENTRY_DTYPE:
        raise ShardFormatError(f"unexpected index dtype {rows.dtype}")
    return rows, meta, int(index_offset)


def read_shard_header(path: Path) -> tuple[np.ndarray, dict, int]:
    """(rows, meta, index_offset) of a shard file, reading only its tail."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < FOOTER.size:
            raise ShardFormatError(f"file too short ({size} bytes)")
        f.seek(size - FOOTER.size)
        index_offset = FOOTER.unpack(f.read(FOOTER.size))[1]
        start = min(index_offset, size)
        f.seek(start)
        tail = f.read()
    buf = _Shifted(tail, start)
    return read_tail(buf, size)


class _Shifted:
    """A bytes object addressed as if it started at ``offset`` of a larger file."""

    def __init__(self, data: bytes, offset: int):
        self.data, self.offset = data, offset

    def __getitem__(self, sl: slice) -> bytes:
        a, b = sl.start - self.offset, sl.stop - self.offset
        if a < 0:
            raise ShardFormatError("footer offsets out of range")
        return self.data[a:b]
