"""An image in a bank shard whose bytes changed on disk (its footer and index intact): the reader checks each
entry's crc32 before decoding, so training on it stops with one line naming the shard and what to run (it was
a PIL ``OSError`` traceback, or, for bytes that still decode, a wrong image without a word)."""

from pathlib import Path

import numpy as np
import pytest

from gensis.bank import BankReader
from gensis.bank.format import SHARD_DIR, read_tail, shard_name
from gensis.cli.main import main
from gensis.errors import UserError


def _damage_every_image(bank: Path, shard: int) -> Path:
    """Flip the bytes in the middle of every payload of one shard (the index and footer keep their checksums)."""
    path = bank / SHARD_DIR / shard_name(shard)
    data = bytearray(path.read_bytes())
    rows, _, _ = read_tail(bytes(data), len(data))
    for r in rows:
        mid = int(r["offset"]) + int(r["length"]) // 2
        data[mid:mid + 4] = bytes(b ^ 0xFF for b in data[mid:mid + 4])
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_image_is_one_line_naming_its_shard(bank_copy):
    path = _damage_every_image(bank_copy, 0)
    r = BankReader(bank_copy)
    with pytest.raises(UserError, match=rf"bank shard {path} is damaged: the image of row \d+ \(image 3\) does "
                                        r"not match its checksum; `gensis bank verify .* --delete-bad`"):
        r.generative_batch(np.array([3]), np.array([1]))
    with pytest.raises(UserError, match="does not match its checksum"):
        r.interpolated_batch(np.arange(12), np.full(12, 0.3))  # several at once: the decoding threads
    assert r.generative_batch(np.array([79]), np.array([0])).shape == (1, 3, 16, 16)  # the other shards read


def test_pretrain_on_it_stops_with_that_line(bank_copy, tiny_npz, tmp_path, capsys):
    for s in range(5):  # 80 images in shards of 16
        _damage_every_image(bank_copy, s)
    rc = main(["pretrain", "--data", str(tiny_npz), "--bank", str(bank_copy), "--out", str(tmp_path / "run"),
               "--preset", "smoke", "--quiet", "optim.batch_size=16", "gen.alphas=[0.3,0.7]", "train.threads=1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "does not match its checksum" in err, err
