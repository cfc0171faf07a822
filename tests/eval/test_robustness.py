"""gensis eval robustness: probe trained in-distribution, saved, applied to OOD folders with a class mask."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gensis.cli.main import main
from gensis.eval.robustness import masked_top1

WNIDS = ["n01", "n02", "n03", "n04"]


def _folder(root, classes, n, shift=0, seed=0):
    g = np.random.default_rng(seed)
    for c in classes:
        k = WNIDS.index(c)
        (root / c).mkdir(parents=True)
        for i in range(n):
            img = (g.random((8, 8)) * 40).astype(np.uint8)
            img[2 * k:2 * k + 2, :] = 250 - shift  # rows: a horizontal flip keeps the class
            Image.fromarray(img).save(root / c / f"{i}.png")


def test_mask_restricts_the_argmax():
    w = torch.eye(3)
    b = torch.zeros(3)
    f = np.array([[0.1, 0.9, 0.5]], np.float32)
    assert masked_top1(f, np.array([2]), w, b, np.array([True, True, True])) == 0.0
    assert masked_top1(f, np.array([2]), w, b, np.array([True, False, True])) == 100.0


def test_robustness_end_to_end(tmp_path, capsys):
    _folder(tmp_path / "in" / "train", WNIDS, 6)
    _folder(tmp_path / "in" / "val", WNIDS, 2, seed=1)
    _folder(tmp_path / "A", ["n02", "n04"], 3, shift=60, seed=2)  # a 2-class subset, shifted
    _folder(tmp_path / "S", WNIDS, 2, shift=100, seed=3)
    probe, js = tmp_path / "probe.safetensors", tmp_path / "r.json"
    argv = ["eval", "robustness", "--encoder", "pixels", "--train", str(tmp_path / "in"),
            "--ood", f"{tmp_path / 'A'},{tmp_path / 'S'}", "--probe", str(probe), "--lrs", "100", "300",
            "--epochs", "40", "--batch-size", "8", "--aug-copies", "1", "--crop-scale", "1", "1", "--json", str(js)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "logits masked" in text and probe.is_file()
    res = json.loads(js.read_text())
    assert res["in_distribution"]["top1"] == 100.0
    a = {s["name"]: s for s in res["ood"]}
    assert a["A"]["classes"] == 2 and a["A"]["masked"] and not a["S"]["masked"]
    assert a["A"]["top1"] >= a["S"]["top1"]
    # the saved probe is reused: same numbers without training
    assert main(argv) == 0
    res2 = json.loads(js.read_text())
    assert res2["probe_reused"] and [s["top1"] for s in res2["ood"]] == [s["top1"] for s in res["ood"]]
    assert res2["linear"]["config"]["epochs"] == 40 and "reused" in capsys.readouterr().out  # what it was trained with
    # other probe settings or data are refused in one line (they were silently ignored: the old probe was applied)
    for change, msg in ((["--epochs", "5"], "--epochs 40 (now 5)"), (["--lrs", "7"], "--lrs [100.0, 300.0] (now [100.0, 300.0, 7.0])"),
                        (["--train", str(tmp_path / "in") + "@train", "--test", str(tmp_path / "A")], "--test data")):
        assert main(argv + change) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0] and "remove it to train again" in err[0], err
    assert json.loads(js.read_text()) == res2  # nothing written


def test_ood_class_unknown_is_one_line(tmp_path, capsys):
    _folder(tmp_path / "in" / "train", WNIDS[:2], 3)
    _folder(tmp_path / "in" / "val", WNIDS[:2], 1)
    _folder(tmp_path / "X", ["n03"], 2)
    probe = tmp_path / "probe.safetensors"
    assert main(["eval", "robustness", "--encoder", "pixels", "--train", str(tmp_path / "in"), "--ood",
                 str(tmp_path / "X"), "--epochs", "1", "--lrs", "1", "--aug-copies", "1", "--probe", str(probe)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "n03" in lines[0]
    assert not probe.exists()  # refused before the probe was trained (it was trained, saved, then refused)


def test_an_empty_ood_class_folder_is_not_a_class_of_the_set(tmp_path, capsys):
    """An empty class folder counted as a class of the set: in the logit mask (an extra competitor) and in the
    'N classes' line."""
    _folder(tmp_path / "in" / "train", WNIDS, 4)
    _folder(tmp_path / "in" / "val", WNIDS, 1, seed=1)
    _folder(tmp_path / "A", ["n02", "n04"], 2, seed=2)
    (tmp_path / "A" / "n01").mkdir()  # no images
    js = tmp_path / "r.json"
    assert main(["eval", "robustness", "--encoder", "pixels", "--train", str(tmp_path / "in"), "--ood",
                 str(tmp_path / "A"), "--epochs", "1", "--lrs", "1", "--aug-copies", "1", "--json", str(js)]) == 0
    assert "class folder n01 holds no images" in capsys.readouterr().err
    assert json.loads(js.read_text())["ood"][0]["classes"] == 2


def test_ood_that_is_a_file_is_named_as_one(tmp_path, capsys):
    """--ood naming a file (an .npz, an archive) said 'folder not found' although the path exists."""
    _folder(tmp_path / "in" / "train", WNIDS[:2], 3)
    npz = tmp_path / "ood.npz"
    npz.write_bytes(b"x")
    base = ["eval", "robustness", "--encoder", "pixels", "--train", str(tmp_path / "in"), "--epochs", "1"]
    assert main([*base, "--ood", str(npz)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"--ood {npz} is a file, not a folder" in lines[0], lines
    assert main([*base, "--ood", str(tmp_path / "missing")]) == 2
    assert "--ood folder not found" in capsys.readouterr().err


def test_skip_bad_images_covers_the_ood_folders(tmp_path, capsys):
    """--skip-bad-images left out the broken files of --train/--test but not those of --ood (ImageNet-R/-Sketch
    copies hold some), so the command still stopped; it now skips and counts them there too."""
    _folder(tmp_path / "in" / "train", WNIDS[:2], 3)
    _folder(tmp_path / "in" / "val", WNIDS[:2], 1)
    _folder(tmp_path / "S", WNIDS[:2], 2, shift=100)
    (tmp_path / "S" / "n01" / "broken.png").write_bytes(b"")
    base = ["eval", "robustness", "--encoder", "pixels", "--train", str(tmp_path / "in"), "--ood", str(tmp_path / "S"),
            "--epochs", "1", "--lrs", "1", "--aug-copies", "1"]
    assert main(base) == 2
    assert "broken.png" in capsys.readouterr().err
    assert main([*base, "--skip-bad-images", "--json", str(tmp_path / "r.json")]) == 0
    assert "skipped 1 unreadable image of 5" in capsys.readouterr().err
    assert [s["images"] for s in json.loads((tmp_path / "r.json").read_text())["ood"]] == [4]


def test_ood_images_that_are_training_images_are_warned_of(tmp_path, capsys):
    """An --ood folder holding the probe's own training images (e.g. the train folder itself) scored them without a
    word: a top-1 that is no out-of-distribution number."""
    _folder(tmp_path / "in" / "train", WNIDS[:2], 3)
    _folder(tmp_path / "in" / "val", WNIDS[:2], 1, seed=1)
    assert main(["eval", "robustness", "--encoder", "pixels", "--train", str(tmp_path / "in"), "--ood",
                 str(tmp_path / "in" / "train"), "--epochs", "1", "--lrs", "1", "--aug-copies", "1"]) == 0
    err = capsys.readouterr().err
    assert "warning: the --ood set is the training set (train, 6 images)" in err and "not a held-out accuracy" in err


def test_table_names_the_encoder_whole():
    """The table's row showed the last 12 characters of the encoder ('mp/r13/p/run' for /tmp/r13/p/run)."""
    from gensis.eval.robustness import format_robustness

    res = {"encoder": {"name": "/tmp/r13/p/run", "identity": "ab12"}, "in_distribution": {"name": "in@val", "top1": 50.0},
           "ood": [{"name": "ood", "top1": 25.0, "images": 4, "classes": 2, "masked": True}]}
    rows = format_robustness(res).splitlines()
    assert rows[2].split() == ["/tmp/r13/p/run", "50.00", "25.00"]
    assert rows[1].index("in@val") == rows[2].index("50.00") + len("50.00") - len("in@val")  # columns aligned
