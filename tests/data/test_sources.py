import gzip
import pickle

import numpy as np
import pytest
from PIL import Image

from gensis.data.restricted_pickle import load_numpy_pickle
from gensis.data.sources import open_data
from gensis.errors import UserError


def _npz(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return str(p)


def test_npz_grey_becomes_rgb_and_split_is_deterministic(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (50, 8, 8), dtype=np.uint8)
    labels = np.repeat(np.arange(5), 10)
    p = _npz(tmp_path, images=imgs, labels=labels)
    tr, va = open_data(p, "train", 0.2, 0), open_data(p, "val", 0.2, 0)
    assert len(tr) == 40 and len(va) == 10
    assert tr.get(0).shape == (8, 8, 3) and (tr.get(0)[..., 0] == tr.get(0)[..., 2]).all()
    assert np.bincount(va.labels).tolist() == [2] * 5  # stratified
    assert open_data(p, "train", 0.2, 0).identity == tr.identity
    assert open_data(p, "train", 0.2, 1).identity != tr.identity
    assert open_data(p + "@all").__len__() == 50


@pytest.mark.parametrize("arrays,msg", [
    (dict(images=np.zeros((4, 8, 8), np.float32)), "uint8"),
    (dict(images=np.zeros((4, 8), np.uint8)), "N×H×W"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(3, np.int64)), "labels"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(4, np.float32)), "integers"),
    (dict(pixels=np.zeros((4, 8, 8), np.uint8)), "no 'images'"),
])
def test_bad_npz(tmp_path, arrays, msg):
    with pytest.raises(UserError, match=msg):
        open_data(_npz(tmp_path, **arrays))


def test_folder_layouts_and_corrupt_image(tmp_path):
    for c in ("cat", "dog"):
        (tmp_path / "f" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((6, 6), i * 40, np.uint8)).save(tmp_path / "f" / c / f"{i}.png")
    ds = open_data(str(tmp_path / "f"))
    assert len(ds) == 6 and ds.classes == ["cat", "dog"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.get(0).shape == (6, 6, 3)
    (tmp_path / "u").mkdir()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "u" / "a.jpg")
    assert open_data(str(tmp_path / "u")).labels is None
    (tmp_path / "f" / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="bad.png"):
        open_data(str(tmp_path / "f"))


def test_missing_and_empty(tmp_path):
    with pytest.raises(UserError, match="not found"):
        open_data(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        open_data(str(tmp_path / "empty"))
    with pytest.raises(UserError, match="unknown builtin"):
        open_data("builtin:nope")
    with pytest.raises(UserError, match="split"):
        open_data("builtin:digits@tset")


def test_builtin_animal_mnist():
    ds = open_data("builtin:animal-mnist", "train")
    assert len(ds) == 8000 and ds.num_classes == 10 and ds.get(0).shape == (28, 28, 3)
    assert len(open_data("builtin:animal-mnist", "val")) == 2000


def test_restricted_unpickler_refuses_code():
    arr = np.arange(6).reshape(2, 3)
    assert (load_numpy_pickle(pickle.dumps(arr)) == arr).all()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_numpy_pickle(pickle.dumps(Evil()))


def test_folder_layout_ignores_bytes_but_not_names_labels_or_split(tmp_path):
    """``layout`` (what --resume compares): a file replaced by other bytes keeps it; other files, another
    split change it; ``identity`` (provenance) changes with the bytes."""
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / c / f"{i}.png")
    before = open_data(str(tmp_path), "all")
    tr = open_data(str(tmp_path), "train", 0.2, 0)
    lay, ident, tr_lay = before.layout, before.identity, tr.layout
    Image.fromarray(np.full((12, 9, 3), 7, np.uint8)).save(tmp_path / "a" / "1.png")  # other size and bytes
    after = open_data(str(tmp_path), "all")
    assert after.layout == lay and after.identity != ident
    assert open_data(str(tmp_path), "train", 0.2, 0).layout == tr_lay != lay
    assert open_data(str(tmp_path), "train", 0.2, 1).layout != tr_lay
    (tmp_path / "b" / "4.png").rename(tmp_path / "b" / "9.png")
    assert open_data(str(tmp_path), "all").layout != lay
