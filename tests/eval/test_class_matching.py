"""Issue 10 item 2: classes match by name across splits and sources; whole sources unless a split is named."""

import json

import numpy as np
import pytest
from PIL import Image

from gensis.cli.main import main
from gensis.data.sources import match_classes, open_data
from gensis.errors import UserError


def _class_folder(root, classes, n=4):
    """root/<class>/i.png: a bright stripe whose column gives the class (so pixel k-NN is exact)."""
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            img = np.full((8, 8), 10 + i, np.uint8)
            col = 2 * "abcd".index(c)
            img[:, col:col + 2] = 250
            Image.fromarray(img).save(root / c / f"{c}{i}.png")


def test_val_classes_follow_train_by_name(tmp_path):
    _class_folder(tmp_path / "d" / "train", "abc")
    _class_folder(tmp_path / "d" / "val", "ac")
    val = open_data(f"{tmp_path / 'd'}@val")
    assert val.classes == ["a", "b", "c"]
    assert sorted(set(val.labels.tolist())) == [0, 2]  # val's 'c' is train's class 2, not 1


def test_knn_train_val_folders_with_a_missing_class_is_right(tmp_path, capsys):
    _class_folder(tmp_path / "d" / "train", "abc")
    _class_folder(tmp_path / "d" / "val", "ac")
    out = tmp_path / "r.json"
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(tmp_path / "d"), "--k", "1",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["top1"] == 100.0  # was 50 % when each split built its own classes


def test_a_val_class_that_train_lacks_is_an_error_naming_it(tmp_path, capsys):
    _class_folder(tmp_path / "d" / "train", "ab")
    _class_folder(tmp_path / "d" / "val", "ad")
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(tmp_path / "d"), "--k", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'d'" in err


def test_two_sources_match_by_name(tmp_path):
    _class_folder(tmp_path / "tr", "abc")
    _class_folder(tmp_path / "te", "bc")
    te = match_classes(open_data(str(tmp_path / "tr")), open_data(str(tmp_path / "te")))
    assert te.classes == ["a", "b", "c"] and sorted(set(te.labels.tolist())) == [1, 2]
    _class_folder(tmp_path / "bad", "ad")
    with pytest.raises(UserError, match="'d'"):
        match_classes(open_data(str(tmp_path / "tr")), open_data(str(tmp_path / "bad")))


def _npz(path, n, seed):
    g = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = (g.random((n, 6, 6)) * 40).astype(np.uint8) + (labels * 200)[:, None, None].astype(np.uint8)
    np.savez(path, images=images, labels=labels)
    return str(path)


def test_two_different_files_are_used_whole_unless_a_split_is_named(tmp_path, capsys):
    a, b = _npz(tmp_path / "A.npz", 50, 0), _npz(tmp_path / "B.npz", 40, 1)
    out = tmp_path / "r.json"
    assert main(["eval", "knn", "--encoder", "pixels", "--train", a, "--test", b, "--k", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["train"]["size"] == 50 and res["test"]["size"] == 40
    assert "scored" not in capsys.readouterr().out  # nothing held out: no split note
    assert main(["eval", "knn", "--encoder", "pixels", "--train", a, "--test", f"{b}@val", "--k", "1",
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["test"]["size"] == 8 and res["train"]["size"] == 50
    text = capsys.readouterr().out
    assert "scored 8 of the 40 images of B" in text


def test_one_source_split_is_stated_in_the_table(tmp_path, capsys):
    a = _npz(tmp_path / "A.npz", 50, 0)
    assert main(["eval", "knn", "--encoder", "pixels", "--train", a, "--k", "1"]) == 0
    text = capsys.readouterr().out
    assert "scored 10 of the 50 images of A (its val split)" in text
    assert "trained on 40 of the 50 images of A (its train split)" in text
