"""Shard files: codecs round-trip, the footer/index/meta parse back, torn files are rejected."""

import numpy as np
import pytest

from gensis.bank.format import ENTRY_DTYPE, Codec, ShardFormatError, read_shard_header, read_tail, write_shard


@pytest.mark.parametrize("name", ["png", "webp", "raw"])
def test_lossless_codecs_round_trip(name):
    img = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    c = Codec(name)
    assert np.array_equal(c.decode(c.encode(img), 12), img)


def test_jpeg_is_close():
    img = np.full((16, 16, 3), 100, np.uint8)
    c = Codec("jpeg", quality=90)
    assert np.abs(c.decode(c.encode(img), 16).astype(int) - 100).max() <= 3


def test_shard_round_trip_and_torn_file(tmp_path):
    payloads = [b"abc", b"", b"defgh"]
    rows = np.zeros(3, ENTRY_DTYPE)
    rows["primary"] = [5, 5, 6]
    path = tmp_path / "shard-000000.gsb"
    write_shard(path, payloads, rows, {"bank": "x", "shard": 0})
    back, meta, index_offset = read_shard_header(path)
    assert meta["bank"] == "x" and meta["format"] == "gensis-bank-shard"
    assert back["offset"].tolist() == [0, 3, 3] and back["length"].tolist() == [3, 0, 5] and index_offset == 8
    data = path.read_bytes()
    assert data[:8] == b"abcdefgh"
    assert not list(tmp_path.glob(".*.tmp"))
    for cut in (1, 20, len(data) - 8):
        with pytest.raises(ShardFormatError):
            read_tail(data[:cut], cut)
    flipped = bytearray(data)
    flipped[index_offset + 60] ^= 1
    with pytest.raises(ShardFormatError, match="checksum"):
        read_tail(bytes(flipped), len(flipped))
