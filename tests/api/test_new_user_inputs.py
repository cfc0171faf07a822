"""Small things a new user does on tiny data (a few images, two classes) that used to pass silently or print a
number that reads wrong: labels that do not fit the images, an empty batch, top-5 with two classes, a test set
whose integer labels are matched to another set's class names."""

from __future__ import annotations

import numpy as np
import pytest

import gensis
from gensis.cli.main import main
from gensis.errors import UserError


@pytest.mark.parametrize("labels,match", [([0, 1], "one integer per image: got shape"),
                                          ([0, 1, -1, 0], "class indices >= 0"),
                                          (["a", "b", "a", "b"], "must be integers")])
def test_array_labels_are_checked_like_dataset_labels(labels, match):
    with pytest.raises(UserError, match=match):
        gensis.as_image_set(np.zeros((4, 8, 8, 3), np.uint8), labels=labels)
    assert list(gensis.as_image_set(np.zeros((4, 8, 8, 3), np.uint8), labels=[0, 1, 1, 0]).labels) == [0, 1, 1, 0]


def test_labels_for_a_source_that_has_its_own_are_refused(images_npz):
    with pytest.raises(UserError, match="brings its own labels"):
        gensis.as_image_set(str(images_npz), labels=[0] * 48)
    with pytest.raises(UserError, match="brings its own labels"):
        gensis.as_image_set(gensis.open_data(str(images_npz), "all"), labels=[0] * 48)


def test_embedding_no_images_keeps_the_feature_dimension(encoder_run):
    enc = gensis.load_encoder(encoder_run)
    assert gensis.embed(enc, np.zeros((0, 16, 16, 3), np.uint8)).shape == (0, enc.dim)


def _two_class_npz(path, named):
    rng = np.random.default_rng(0)
    extra = {"classes": np.array(["cat", "dog"])} if named else {}
    np.savez(path, images=rng.integers(0, 255, (20, 16, 16, 3), dtype=np.uint8), labels=np.arange(20) % 2, **extra)
    return path


def test_two_classes_say_top5_is_trivial_and_unnamed_labels_are_announced(tmp_path, encoder_run, capsys):
    named, bare = _two_class_npz(tmp_path / "named.npz", True), _two_class_npz(tmp_path / "bare.npz", False)
    assert main(["eval", "knn", "--encoder", str(encoder_run), "--train", str(named), "--test", str(bare),
                 "--k", "3", "--cache", "none"]) == 0
    out, err = capsys.readouterr()
    assert "top-5 is 100% by construction with 2 classes" in out
    assert "bare has no class names" in err and "(0=cat, 1=dog)" in err
    assert main(["eval", "knn", "--encoder", str(encoder_run), "--train", str(named), "--k", "3",
                 "--cache", "none"]) == 0
    assert "warning" not in capsys.readouterr().err  # one source: nothing to match


def test_k_larger_than_the_training_set_names_the_fix(tmp_path, encoder_run, capsys):
    data = _two_class_npz(tmp_path / "d.npz", True)
    assert main(["eval", "knn", "--encoder", str(encoder_run), "--train", str(data), "--cache", "none"]) == 2
    assert "k=20 is more than the 16 training images: use k <= 16 (--k)" in capsys.readouterr().err


def test_config_and_preset_together_are_refused_not_ignored():
    cfg = gensis.PretrainConfig.from_preset("smoke")
    with pytest.raises(UserError, match="give config= or preset='paper', not both"):
        gensis.api.pretrain_config(cfg, preset="paper")
    with pytest.raises(UserError, match="not both"):
        gensis.api.mil_config(gensis.MILConfig.from_preset("smoke"), preset="base")
    assert gensis.api.pretrain_config(cfg) == cfg  # one or the other: as before
    assert gensis.api.pretrain_config() == gensis.PretrainConfig.from_preset("demo")
    assert gensis.api.mil_config() == gensis.MILConfig.from_preset("base")


def test_demo_on_unlabelled_images_is_refused_before_training(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "flat").mkdir()
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "flat" / f"{i}.png")
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--data", str(tmp_path / "flat"), "--out", str(out),
                 "pretrain.optim.batch_size=8", "eldm.optim.batch_size=8"]) == 2
    assert "has no labels, and the demo's eval stage" in capsys.readouterr().err
    assert not out.exists()
    (tmp_path / "one").mkdir()
    (tmp_path / "flat").rename(tmp_path / "one" / "cat")  # one class folder: every score 100% after the whole run
    assert main(["demo", "--preset", "smoke", "--data", str(tmp_path / "one"), "--out", str(out),
                 "pretrain.optim.batch_size=8", "eldm.optim.batch_size=8"]) == 2
    assert "holds images of one class only" in capsys.readouterr().err
    assert not out.exists()


def test_the_top5_note_holds_for_the_ks_printed(tmp_path, encoder_run, capsys):
    """k-NN top-5 counts min(5, k) classes: with k=1 and 2 classes it is top-1, not 100% (the note said it was)."""
    data = _two_class_npz(tmp_path / "d.npz", True)
    assert main(["eval", "knn", "--encoder", str(encoder_run), "--train", str(data), "--k", "1", "2",
                 "--cache", "none"]) == 0
    out = capsys.readouterr().out
    rows = {int(line.split()[0]): line.split()[1:] for line in out.splitlines() if line.strip()[:1].isdigit()}
    assert rows[1][0] == rows[1][1] and rows[2][1] == "100.00"  # k=1: top-5 = top-1
    assert "100% by construction for k >= 2" in out and "with 2 classes (<= 5)" not in out



def test_one_class_says_top1_is_trivial_too(tmp_path, encoder_run, capsys):
    """One class folder: top-1 is 100 % whatever the encoder, and the note said "read top-1"."""
    _class_folders(tmp_path / "one", ["cat"], n=10)
    assert main(["eval", "knn", "--encoder", str(encoder_run), "--train", str(tmp_path / "one"), "--k", "3",
                 "--cache", "none"]) == 0
    out = capsys.readouterr().out
    assert "one class: top-1 and top-5 are 100% by construction" in out and "read top-1" not in out


def _class_folders(root, classes, seed=0, n=4):
    """``root/CLASS/i.png``: ``n`` random 16-px images per class (the same images for the same seed and class)."""
    from PIL import Image

    for c in classes:
        rng = np.random.default_rng([seed, sum(map(ord, c))])
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_python_knn_and_linear_match_a_test_folders_classes_by_name(tmp_path, encoder_run):
    """A held-out folder without one of the training classes (val/{b,c} against train/{a,b,c}): its b and c are
    train's classes 1 and 2, not 0 and 1, in Python as on the command line (was: 0 % where 100 % is right)."""
    train = _class_folders(tmp_path / "train", ["a", "b", "c"])
    test = _class_folders(tmp_path / "test", ["b", "c"])  # the very images of train's b and c
    enc = gensis.load_encoder(encoder_run)
    assert gensis.knn(enc, str(train), str(test), ks=[1])["top1"] == 100.0  # each finds its own copy
    assert gensis.knn(enc, gensis.open_data(str(train), "all"), gensis.open_data(str(test), "all"), ks=[1])["top1"] == 100.0
    _class_folders(tmp_path / "other", ["b", "z"])
    for evaluate in (lambda t: gensis.knn(enc, str(train), t, ks=[1]),
                     lambda t: gensis.linear(enc, str(train), t, epochs=1, lrs=[0.1], aug_copies=1)):
        with pytest.raises(UserError, match="class 'z' of other is not among the classes of train"):
            evaluate(str(tmp_path / "other"))
