"""A folder's identity (names, sizes, labels) and its content hashes (``ImageSet.content``): an image edited in
place with as many bytes changes the content, a copy with new file times does not (docs/bank.md, "Which data a
bank belongs to")."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

import gensis.data.sources as sources
from gensis.data.sources import cache_key, content_change, open_data


def _folder(root, n=6, classes=("a", "b")):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):  # BMP: an edit of the pixels keeps the file size
            Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(root / c / f"{i}.bmp")
    return root


def _edit_in_place(path):
    size = os.path.getsize(path)
    time.sleep(0.01)
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(path)
    assert os.path.getsize(path) == size


def _copy(src, dst):
    time.sleep(0.01)
    shutil.copytree(src, dst, copy_function=shutil.copyfile)  # as cp -r: new file times
    assert os.stat(dst / "a" / "0.bmp").st_mtime_ns != os.stat(src / "a" / "0.bmp").st_mtime_ns
    return dst


@pytest.mark.parametrize("large", [False, True])
def test_same_size_edit_changes_content_and_a_copy_does_not(tmp_path, monkeypatch, large):
    """A decoded folder (<= FULL_DECODE_LIMIT images) hashes every file; a larger one a fixed sample."""
    if large:  # a folder past the decode limit: only a sample of files is hashed (here 3 of 12)
        monkeypatch.setattr(sources, "FULL_DECODE_LIMIT", 5)
        monkeypatch.setattr(sources, "CONTENT_SAMPLE", 3)
    src = _folder(tmp_path / "src")
    before = open_data(str(src), "train", 0.25, 0)
    assert set(before.content) == ({"sample"} if large else {"sample", "all"})

    copy = open_data(str(_copy(src, tmp_path / "copy")), "train", 0.25, 0)
    assert copy.identity == before.identity and copy.content == before.content  # a copy is the same data
    assert content_change(before.content, copy.content) is None
    assert cache_key(copy)["files"] != cache_key(before)["files"]  # ... whose caches are recomputed (new times)

    _edit_in_place(before.parent.paths[0])  # the first file is always in the sample
    after = open_data(str(src), "train", 0.25, 0)
    assert after.identity == before.identity  # names, sizes and labels are unchanged ...
    assert after.content != before.content  # ... the bytes are not
    why = content_change(before.content, after.content)
    assert why is not None and ("a fixed sample of 3 files" if large else "every file") in why
    assert cache_key(after) != cache_key(before)
    assert content_change(None, after.content) is None  # a record from before content hashes: nothing to compare


def test_all_of_a_split_folder_keeps_every_files_hash(tmp_path):
    """DATA@all of a folder with train/ and val/ concatenates the two folders: it still hashes every file."""
    _folder(tmp_path / "d" / "train")
    _folder(tmp_path / "d" / "val", n=2)
    ds = open_data(str(tmp_path / "d"), "all")
    assert set(ds.content) == {"sample", "all"}
    _edit_in_place(tmp_path / "d" / "val" / "b" / "1.bmp")
    assert open_data(str(tmp_path / "d"), "all").content["all"] != ds.content["all"]


def test_bank_refuses_images_edited_in_place_and_accepts_a_copy(tmp_path):
    """The bank records the data's content hashes (outside its identity: banks made before still resume);
    pretrain's check and a resumed `bank generate` refuse other bytes under the same names and sizes; a copy of
    the folder with new file times (cp -r, rsync without -t) is the same data."""
    from bank_builders import bank_cfg, fake_generator

    from gensis.bank import generate_bank
    from gensis.bank.reader import BankReader
    from gensis.errors import UserError

    src = _folder(tmp_path / "src", n=10)
    out = tmp_path / "bank"
    cfg = bank_cfg("data.limit=null", "storage.shard_size=8")
    assert generate_bank(cfg, str(src), out, generator=fake_generator(), quiet=True).complete
    reader = BankReader(out)
    assert reader.header["sources"]["data_content"]["all"]
    assert reader.identity == reader.header["identity"]

    _copy(src, tmp_path / "copy")
    reader.check_dataset(open_data(str(tmp_path / "copy"), "train", 0.2, 0))  # no error

    for p in sorted(src.glob("*/*.bmp")):
        _edit_in_place(p)
    with pytest.raises(UserError, match=r"other images .*same file names and sizes, but other bytes"):
        reader.check_dataset(open_data(str(src), "train", 0.2, 0))
    with pytest.raises(UserError, match=r"bank begun from other images .*restore the images"):
        generate_bank(cfg, str(src), out, generator=fake_generator(), quiet=True)
