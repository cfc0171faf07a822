"""``gensis eval knn|linear``: results, JSON, and one-line user errors with exit status 2."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cli_asserts import one_error_line
from gensis.cli.main import main


def _npz(tmp_path, n=60, labelled=True):
    g = np.random.default_rng(0)
    labels = (np.arange(n) // 2) % 3
    images = (g.random((n, 8, 8)) * 50).astype(np.uint8)
    for c in range(3):
        images[labels == c, :, c * 2:c * 2 + 3] += 180  # a bright stripe whose place gives the class
    path = tmp_path / "toy.npz"
    if labelled:
        np.savez(path, images=images, labels=labels)
    else:
        np.savez(path, images=images)
    return path


_one_error_line = one_error_line


def test_knn_table_and_json(tmp_path, capsys):
    data = _npz(tmp_path)
    out = tmp_path / "res" / "knn.json"
    rc = main(["eval", "knn", "--encoder", "pixels", "--train", str(data), "--k", "3", "5", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "top-1" in text and "toy@train" in text and "toy@val" in text
    res = json.loads(out.read_text())
    assert [r["k"] for r in res["results"]] == [3, 5]
    assert res["train"]["size"] == 48 and res["test"]["size"] == 12  # default 0.2 held out
    assert res["encoder"]["identity"] == "pixels"
    assert res["top1"] > 90


def test_linear_table_and_json(tmp_path, capsys):
    data = _npz(tmp_path)
    out = tmp_path / "lin.json"
    rc = main(["eval", "linear", "--encoder", "pixels", "--train", str(data), "--lrs", "0.1", "1", "--epochs", "3",
               "--batch-size", "16", "--aug-copies", "1", "--json", str(out)])
    assert rc == 0
    assert "best: lr" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert [r["lr"] for r in res["results"]] == [0.1, 1.0]
    assert res["config"]["epochs"] == 3 and res["protocol"] == "linear"


def test_explicit_splits_and_same_set_warning(tmp_path, capsys):
    data = _npz(tmp_path)
    rc = main(["eval", "knn", "--encoder", "pixels", "--train", f"{data}@all", "--test", f"{data}@all", "--k", "1"])
    assert rc == 0
    cap = capsys.readouterr()
    assert "warning: the test set is the training set" in cap.err
    assert "100.00" in cap.out  # every test image is its own nearest neighbour


def test_test_images_that_are_also_training_images_are_counted(tmp_path, capsys):
    """``--train X@all --test X@val``: every test image is also a training image, and the k-NN score is inflated
    without a word (was); the same files of a folder, or rows of one array, are counted in a warning."""
    from PIL import Image

    data = _npz(tmp_path)
    folder = tmp_path / "imgs"
    for i, (img, y) in enumerate(zip(np.load(data)["images"], np.load(data)["labels"])):
        (folder / f"c{y}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"c{y}" / f"{i}.png")
    for src, n in ((data, 12), (folder, 12)):
        assert main(["eval", "knn", "--encoder", "pixels", "--train", f"{src}@all", "--test", f"{src}@val", "--k", "1",
                     "--cache", "none"]) == 0
        err = capsys.readouterr().err
        assert f"warning: {n} of the {n} test images" in err and "are also training images" in err
    assert main(["eval", "knn", "--encoder", "pixels", "--train", f"{data}@train", "--test", f"{folder}@val",
                 "--k", "1", "--cache", "none"]) == 0  # the same pictures as other files: not known, no warning
    assert "training images" not in capsys.readouterr().err
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(folder), "--k", "1", "--cache", "none"]) == 0
    assert "warning" not in capsys.readouterr().err  # the train and val splits: disjoint


def test_test_images_copied_from_the_training_folder_are_counted(tmp_path, capsys):
    """A test folder made by copying some training files (cp, not mv): those images found their copies in the
    training set and the k-NN score was inflated without a word; files of the same class folder, name and size
    are counted."""
    import shutil

    from PIL import Image

    g = np.random.default_rng(0)
    for c in ("a", "b"):
        for i in range(6):
            (tmp_path / "train" / c).mkdir(parents=True, exist_ok=True)
            Image.fromarray((g.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / "train" / c / f"{i}.png")
    for c in ("a", "b"):
        (tmp_path / "test" / c).mkdir(parents=True)
        for i in range(2):
            shutil.copy(tmp_path / "train" / c / f"{i}.png", tmp_path / "test" / c / f"{i}.png")
        Image.fromarray((g.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / "test" / c / "new.png")
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(tmp_path / "train"), "--test",
                 str(tmp_path / "test"), "--k", "1", "--cache", "none"]) == 0
    err = capsys.readouterr().err
    assert "warning: 4 of the 6 test images (test) have the folder, file name and size of a training image" in err, err


@pytest.mark.parametrize("argv,msg", [
    (["--train", "/no/such/dir"], "dataset not found"),
    (["--encoder", "/no/such/run"], "not a run directory (or 'pixels' / 'random' / timm:NAME=WEIGHTS)"),
    (["--k", "0"], "positive"),
    (["--k", "1000"], "more than"),
    (["--temperature", "0"], "temperature"),
    (["--val-fraction", "1.5"], "val-fraction"),
    (["--split-seed", "-1"], "--split-seed must be >= 0"),  # was numpy's ValueError traceback
    (["--encoder", "random", "--init-seed", "-1"], "--init-seed must be >= 0"),
    (["--encoder", "{tmp}"], "is not a pretraining run (no manifest.json)"),  # e.g. the data folder: said
    # 'has no teacher_backbone.safetensors: is the pretraining run finished?'
])
def test_knn_user_errors(tmp_path, capsys, argv, msg):
    args = ["eval", "knn", "--encoder", "pixels", "--train", str(_npz(tmp_path))] + [
        a.format(tmp=tmp_path) for a in argv]  # the last one wins
    assert main(args) == 2
    assert msg in _one_error_line(capsys.readouterr().err)


def test_unlabelled_data_is_a_user_error(tmp_path, capsys):
    data = _npz(tmp_path, labelled=False)
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(data)]) == 2
    assert "no labels" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("argv,msg", [(["--epochs", "0"], "epochs"), (["--lrs", "-1"], "learning rates"),
                                      (["--crop-scale", "0.9", "0.1"], "crop scale")])
def test_linear_user_errors(tmp_path, capsys, argv, msg):
    data = _npz(tmp_path)
    assert main(["eval", "linear", "--encoder", "pixels", "--train", str(data)] + argv) == 2
    assert msg in _one_error_line(capsys.readouterr().err)


def test_console_script_missing_dataset_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1"}
    p = subprocess.run([sys.executable, "-m", "gensis.cli.main", "eval", "knn", "--encoder", "pixels",
                        "--train", str(tmp_path / "missing.npz")], capture_output=True, text=True, env=env)
    assert p.returncode == 2
    assert _one_error_line(p.stderr) == f"gensis: error: dataset not found: {tmp_path / 'missing.npz'}"
    assert p.stdout == ""


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "linear", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--encoder", "--train", "--test", "--json", "--lrs", "--epochs", "--aug-copies", "--device"):
        assert opt in text


def test_json_never_overwrites_a_file_gensis_did_not_write_as_a_result(tmp_path, capsys):
    """`--json RUN/manifest.json` replaced the run's manifest with the k-NN result (the run was no longer a run);
    an existing file that is not an earlier result is refused before the evaluation; an earlier result is replaced."""
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, images=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), labels=np.arange(20) % 2)
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"stage": "pretrain", "status": "done"}')
    argv = ["eval", "knn", "--encoder", "pixels", "--train", str(data), "--k", "3", "--cache", "none", "--json"]
    assert main([*argv, str(manifest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a result file gensis wrote" in err
    assert manifest.read_text() == '{"stage": "pretrain", "status": "done"}'
    out = tmp_path / "res.json"
    assert main([*argv, str(out)]) == 0
    assert "replacing" not in capsys.readouterr().out
    assert main([*argv, str(out)]) == 0  # a rerun replaces its own result, and says so (it was silent)
    assert f"results written to {out} (replacing the earlier result there: knn of pixels, written " \
        in capsys.readouterr().out
    assert json.loads(out.read_text())["protocol"] == "knn"


def test_negative_seeds_are_one_line(tmp_path, capsys):
    """`eval umap --seed -1` was numpy's ValueError traceback; open_data(seed=-1) from Python likewise."""
    import gensis
    from gensis.errors import UserError

    data = _npz(tmp_path)
    assert main(["eval", "umap", "--encoder", "pixels", "--data", str(data), "--out", str(tmp_path / "u.png"),
                 "--seed", "-1"]) == 2
    assert "--seed must be >= 0" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "u.png").exists()
    with pytest.raises(UserError, match="split seed .* must be an integer >= 0, got -1"):
        gensis.open_data(data, "train", seed=-1)


def test_json_records_the_options_and_split_that_make_it_again(tmp_path, capsys):
    """A result file had neither the command's options nor the split's val_fraction / seed (a knn.json from
    `--val-fraction 0.3 --split-seed 2` read like a default one); both are recorded, and the options given back to
    gensis.evaluate give the same numbers."""
    import gensis

    data, js = _npz(tmp_path), tmp_path / "knn.json"
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(data), "--k", "3", "--val-fraction", "0.3",
                 "--split-seed", "2", "--json", str(js), "--cache", "none"]) == 0
    res = json.loads(js.read_text())
    opts = res["options"]
    assert opts["k"] == [3] and opts["val_fraction"] == 0.3 and opts["split_seed"] == 2 and opts["encoder"] == "pixels"
    assert opts["temperature"] == 0.07 and opts["train"] == str(data)  # defaults too
    for role in ("train", "test"):
        assert res[role]["val_fraction"] == 0.3 and res[role]["split_seed"] == 2
    again = gensis.evaluate("knn", **{**opts, "json": None})
    assert again["top1"] == res["top1"] and again["test"]["identity"] == res["test"]["identity"]
    assert again["options"] == {**opts, "json": None}


def test_help_says_what_each_evaluation_does(capsys):
    """--random-like's help promised "without --train, is scored on the run's data" for every evaluation: umap's
    option is --data, and copydetect, retrieval and davis have no default data; linear said "whole image on test"
    (it is the centre crop of the short side)."""
    def help_of(name):
        with pytest.raises(SystemExit):
            main(["eval", name, "--help"])
        return " ".join(capsys.readouterr().out.split())

    assert "without --train, is scored on the run's data" in help_of("knn")
    assert "without --data, is scored on the run's data" in help_of("umap")
    for name in ("copydetect", "retrieval", "davis"):
        assert "scored on the run's data" not in help_of(name)
    text = help_of("linear")
    assert "whole image on test" not in text and "centre crop" in text


def test_a_split_too_small_to_hold_an_image_says_why(tmp_path, capsys):
    """Two images in two classes: the val split (20 % per class) is empty; the line said only 'is empty'."""
    from PIL import Image

    for c, v in (("a", 20), ("b", 200)):
        (tmp_path / "d" / c).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(tmp_path / "d" / c / "0.png")
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(tmp_path / "d"), "--k", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its val split of the 2 images holds none" in err[0], err


@pytest.mark.parametrize("argv,option", [
    (["knn", "--train", "{data}", "--json", "{blocked}/r.json"], "--json"),
    (["linear", "--train", "{data}", "--json", "{blocked}/r.json"], "--json"),
    (["umap", "--data", "{data}", "--out", "{blocked}/m.png"], "--out"),
    (["robustness", "--train", "{data}", "--ood", "{tmp}", "--probe", "{blocked}/p.safetensors"], "--probe")])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, argv, option):
    """An output under a file (a typo: results.json/knn.json) failed only when written, after the whole evaluation
    (its work lost); it is refused first, before the encoder is even opened (here: one that does not exist)."""
    blocked = tmp_path / "results.json"
    blocked.write_text("{}")
    fill = {"data": str(_npz(tmp_path)), "blocked": str(blocked), "tmp": str(tmp_path)}
    assert main(["eval", argv[0], "--encoder", str(tmp_path / "no-run"), *[a.format(**fill) for a in argv[1:]]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{option} {blocked}/" in err[0] and f"cannot be written: {blocked} is a file" in err[0], err


def test_quiet_and_a_misspelt_option(tmp_path, capsys, monkeypatch):
    """`eval` had no --quiet (every other command has it: 'unrecognized arguments: --quiet'), and a misspelt option
    was reported under `gensis`'s usage, without the option meant."""
    import gensis

    monkeypatch.delenv("GENSIS_NO_PROGRESS", raising=False)
    data = str(_npz(tmp_path))
    argv = ["eval", "knn", "--encoder", "pixels", "--train", data, "--k", "3", "--cache", "none"]
    assert main(argv) == 0
    assert "train features" in capsys.readouterr().err
    assert main(argv + ["--quiet"]) == 0
    cap = capsys.readouterr()
    assert "features" not in cap.err and "top-1" in cap.out
    gensis.evaluate("knn", encoder="pixels", train=data, k=[3], cache="none", quiet=True)
    assert "features" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["eval", "knn", "--encoder", "pixels", "--kk", "3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: gensis eval knn" in err and "unrecognized arguments: --kk 3 (did you mean --k?)" in err


def test_encoder_that_is_no_run_says_what_it_is(tmp_path, capsys):
    """A weights file, a `gensis export --to timm` folder or 'pixel' as --encoder got only 'is not a run directory
    (or pixels / random)': the line now says what it is and what to give."""
    data = _npz(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text('{"stage": "pretrain"}')
    (run / "teacher_backbone.safetensors").write_bytes(b"")
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text("{}")
    (export / "model.safetensors").write_bytes(b"")
    for enc, msg in ((run / "teacher_backbone.safetensors", f"it is a weights file: give its run folder {run}"),
                     (export, "it is a model exported by `gensis export --to timm`"),
                     ("pixel", "did you mean 'pixels'?")):
        assert main(["eval", "knn", "--encoder", str(enc), "--train", str(data)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
