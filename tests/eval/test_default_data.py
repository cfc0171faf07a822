"""``gensis eval knn|linear|all --encoder RUN`` without ``--train``: the data the run was pretrained on (its
manifest), with the run's split; one line says which; a source that moved or has no labels is one error line."""

import argparse
import json
import os

import numpy as np
import pytest
import torch

from cli_asserts import one_error_line
from gensis.cli.main import main

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")


def _images(n=60, labelled=True):
    g = np.random.default_rng(0)
    labels = np.arange(n) % 3
    imgs = (g.random((n, 16, 16, 3)) * 50).astype(np.uint8)
    for c in range(3):
        imgs[labels == c, :, c * 5:c * 5 + 4] += 180  # a bright stripe whose place gives the class
    return (imgs, labels) if labelled else (imgs, None)


def _run(folder, data, val_fraction=0.25, identity=None):
    """A finished pretraining-run folder (tiny random ViT) whose manifest records ``data``."""
    from gensis.config import dump, load_config
    from gensis.models.backbone import build_backbone
    from gensis.rundir import atomic_write_json, save_tensors

    cfg = load_config("pretrain", "smoke", ["data.image_size=16", "model.patch_size=4", "model.embed_dim=32",
                                            "model.depth=1", "model.num_heads=2", f"data.val_fraction={val_fraction}"])
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    (folder / "config.yaml").write_text(dump(cfg))
    save_tensors(folder / "teacher_backbone.safetensors",
                 build_backbone({**cfg["model"], "drop_path_rate": 0.0}, 16).state_dict())
    inputs = {} if data is None else {"data": str(data), **({"data_identity": identity} if identity else {})}
    atomic_write_json(folder / "manifest.json", {"stage": "pretrain", "status": "done", "inputs": inputs})
    return folder


@pytest.fixture()
def mine(tmp_path):
    imgs, labels = _images()
    path = tmp_path / "mine.npz"
    np.savez(path, images=imgs, labels=labels)
    return path


_one_error_line = one_error_line


def test_knn_without_train_uses_the_runs_own_data_and_split(tmp_path, mine, capsys):
    run = _run(tmp_path / "run", mine)
    js = tmp_path / "knn.json"
    assert main(["eval", "knn", "--encoder", str(run), "--k", "3", "--cache", "none", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert f"train/test: {mine} (from the run's manifest)" in out
    res = json.loads(js.read_text())
    assert res["train"]["name"] == "mine@train" and res["test"]["name"] == "mine@val"
    assert (res["train"]["size"], res["test"]["size"]) == (45, 15)  # the run's data.val_fraction=0.25


def test_linear_and_all_without_train_use_the_runs_own_data(tmp_path, mine, capsys):
    run = _run(tmp_path / "run", f"{mine}@train")  # a recorded split suffix: the source's train/val splits
    js = tmp_path / "lin.json"
    assert main(["eval", "linear", "--encoder", str(run), "--epochs", "1", "--lrs", "0.1", "--aug-copies", "1",
                 "--batch-size", "16", "--cache", "none", "--json", str(js)]) == 0
    assert f"train/test: {mine} (from the run's manifest)" in capsys.readouterr().out
    assert json.loads(js.read_text())["test"]["name"] == "mine@val"
    js = tmp_path / "all.json"
    assert main(["eval", "all", "--encoder", str(run), "--cache", "none", "--json", str(js)]) == 0
    assert json.loads(js.read_text())["results"]["knn"]["train"]["name"] == "mine@train"


def test_an_explicit_train_is_used_as_given(tmp_path, mine, capsys):
    other = tmp_path / "other.npz"
    imgs, labels = _images(30)
    np.savez(other, images=imgs, labels=labels)
    run = _run(tmp_path / "run", mine)
    js = tmp_path / "knn.json"
    assert main(["eval", "knn", "--encoder", str(run), "--train", str(other), "--k", "3", "--cache", "none",
                 "--json", str(js)]) == 0
    assert "from the run's manifest" not in capsys.readouterr().out
    assert json.loads(js.read_text())["train"]["name"] == "other@train"


@pytest.mark.parametrize("case,msg", [("moved", "which no longer exists"), ("unlabelled", "no labels"),
                                      ("relative", "a path relative to the folder the run was started in"),
                                      ("unrecorded", "does not record the data it was trained on"),
                                      ("python-object", "another session")])
def test_unusable_recorded_data_is_one_line_asking_for_train(tmp_path, capsys, case, msg):
    path = tmp_path / "data.npz"
    imgs, labels = _images(labelled=case != "unlabelled")
    if case not in ("moved", "relative"):
        np.savez(path, images=imgs, **({} if labels is None else {"labels": labels}))
    data = {"unrecorded": None, "python-object": "python:deadbeef@all", "relative": "data/d.npz"}.get(case, path)
    run = _run(tmp_path / "run", data)
    for verb in ("knn", "linear"):
        assert main(["eval", verb, "--encoder", str(run), "--cache", "none"]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert msg in line and "pass --train DATA (and --test DATA)" in line


def test_changed_data_is_a_warning(tmp_path, mine, capsys):
    run = _run(tmp_path / "run", mine, identity="0123456789abcdef")
    assert main(["eval", "knn", "--encoder", str(run), "--k", "3", "--cache", "none"]) == 0
    assert "now holds other images than" in capsys.readouterr().err
    from gensis.data.sources import open_data

    same = _run(tmp_path / "same", mine, identity=open_data(str(mine), "train", 0.25, 0, limit=512).identity)
    assert main(["eval", "knn", "--encoder", str(same), "--k", "3", "--cache", "none"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("encoder", ["pixels", "random", "timm:vit_tiny_patch16_224=w.pth"])
def test_baselines_keep_the_builtin_default_and_say_so(encoder, capsys):
    from gensis.eval.common import DEFAULT_DATA, resolve_data

    args = argparse.Namespace(encoder=encoder, train=None, test=None)
    assert resolve_data(args) == (DEFAULT_DATA, None, False)
    assert capsys.readouterr().out.startswith(f"train/test: {DEFAULT_DATA} (the default for --encoder ")


def test_help_says_where_the_default_data_comes_from(capsys):
    for verb in ("knn", "linear"):
        with pytest.raises(SystemExit):
            main(["eval", verb, "--help"])
        assert "pretrained on" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("verb,extra", [("knn", ["--k", "3"]),
                                        ("linear", ["--epochs", "1", "--lrs", "0.1", "--aug-copies", "1",
                                                    "--batch-size", "16"])])
def test_random_like_run_is_scored_on_the_runs_own_data(tmp_path, mine, capsys, verb, extra):
    """The random-init baseline of a run (--encoder random --random-like RUN) reads RUN's data and split, as
    --encoder RUN does, with the same line; never builtin:animal-mnist silently."""
    run = _run(tmp_path / "run", mine)
    js = tmp_path / f"{verb}.json"
    assert main(["eval", verb, "--encoder", "random", "--random-like", str(run), *extra, "--cache", "none",
                 "--json", str(js)]) == 0
    assert f"train/test: {mine} (from the run's manifest)" in capsys.readouterr().out
    res = json.loads(js.read_text())
    assert res["train"]["name"] == "mine@train" and res["test"]["name"] == "mine@val"
    assert (res["train"]["size"], res["test"]["size"]) == (45, 15)  # the run's data.val_fraction=0.25
    assert res["encoder"]["name"] == "random"


def test_random_like_mistakes_are_one_line(tmp_path, mine, capsys):
    run = _run(tmp_path / "run", mine)
    assert main(["eval", "knn", "--encoder", "pixels", "--random-like", str(run), "--cache", "none"]) == 2
    assert "--random-like" in _one_error_line(capsys.readouterr().err)
    unrecorded = _run(tmp_path / "unrecorded", None)
    assert main(["eval", "knn", "--encoder", "random", "--random-like", str(unrecorded), "--cache", "none"]) == 2
    assert "pass --train DATA" in _one_error_line(capsys.readouterr().err)


def test_robustness_without_train_uses_the_runs_own_data(tmp_path, capsys):
    """robustness required --train although knn and linear default to the run's data: now the same default and
    the same line."""
    from PIL import Image

    imgs, labels = _images()
    data = tmp_path / "named.npz"
    np.savez(data, images=imgs, labels=labels, classes=np.array(["a", "b", "c"]))
    ood = tmp_path / "ood"
    for c, name in ((1, "b"), (2, "c")):
        (ood / name).mkdir(parents=True)
        for i, img in enumerate(imgs[labels == c][:2]):
            Image.fromarray(img).save(ood / name / f"{i}.png")
    run = _run(tmp_path / "run", data)
    js = tmp_path / "r.json"
    assert main(["eval", "robustness", "--encoder", str(run), "--ood", str(ood), "--epochs", "1", "--lrs", "0.1",
                 "--aug-copies", "1", "--batch-size", "16", "--cache", "none", "--json", str(js)]) == 0
    assert f"train/test: {data} (from the run's manifest)" in capsys.readouterr().out
    res = json.loads(js.read_text())
    assert res["train"]["name"] == "named@train" and res["train"]["size"] == 45  # the run's val_fraction=0.25
    assert [s["classes"] for s in res["ood"]] == [2]


def test_umap_without_data_uses_the_runs_own_data(tmp_path, mine, capsys):
    """umap required --data although knn, linear and robustness default to the run's data: now the same default
    (gensis.eval.common.default_data) and the same line; runs pretrained on different data need --data."""
    run = _run(tmp_path / "run", mine)
    png, js = tmp_path / "m.png", tmp_path / "m.json"
    assert main(["eval", "umap", "--encoder", f"{run},pixels", "--per-class", "5", "--method", "tsne",
                 "--cache", "none", "--out", str(png), "--json", str(js)]) == 0
    assert f"data: {mine} (from the run's manifest)" in capsys.readouterr().out
    res = json.loads(js.read_text())
    assert res["data"] == "mine" and res["real"] == 15 and png.is_file()
    other = tmp_path / "other.npz"
    np.savez(other, images=_images(30)[0], labels=_images(30)[1])
    two = _run(tmp_path / "two", other)
    assert main(["eval", "umap", "--encoder", f"{run},{two}", "--out", str(png), "--cache", "none"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "pretrained on different data" in line and str(other) in line and "pass --data DATA" in line
    unrecorded = _run(tmp_path / "unrecorded", None)
    assert main(["eval", "umap", "--encoder", str(unrecorded), "--out", str(png), "--cache", "none"]) == 2
    assert "pass --data DATA" in _one_error_line(capsys.readouterr().err)
