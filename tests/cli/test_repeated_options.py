"""A list option given twice adds to the list (argparse's default keeps only the last occurrence, silently):
``--k 5 --k 3`` evaluates k = 3 and 5, ``--methods dino --methods simclr`` runs both."""

import json
import os

import numpy as np
import pytest

from gensis.cli.main import build_parser, main

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")


def _npz(tmp_path, n=60):
    g = np.random.default_rng(0)
    labels = (np.arange(n) // 2) % 3
    images = (g.random((n, 8, 8)) * 50).astype(np.uint8)
    for c in range(3):
        images[labels == c, :, c * 2:c * 2 + 3] += 180
    path = tmp_path / "toy.npz"
    np.savez(path, images=images, labels=labels)
    return path


def _knn_ks(tmp_path, *k_args):
    out = tmp_path / "knn.json"
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(_npz(tmp_path)), "--cache", "none",
                 *k_args, "--json", str(out)]) == 0
    return [r["k"] for r in json.loads(out.read_text())["results"]]


def test_repeated_k_accumulates_sorted_and_distinct(tmp_path, capsys):
    assert _knn_ks(tmp_path, "--k", "5", "--k", "3", "--k", "5") == [3, 5]
    table = capsys.readouterr().out.splitlines()
    assert [l.split()[0] for l in table if l.strip()[:1].isdigit()] == ["3", "5"]  # the table: increasing k


def test_k_default_and_one_list_are_unchanged(tmp_path, capsys):
    assert _knn_ks(tmp_path) == [10, 20]
    assert _knn_ks(tmp_path, "--k", "20", "1") == [1, 20]


def test_repeated_lrs_accumulate_distinct_in_the_given_order(tmp_path, capsys):
    out = tmp_path / "lin.json"
    assert main(["eval", "linear", "--encoder", "pixels", "--train", str(_npz(tmp_path)), "--lrs", "1",
                 "--lrs", "0.1", "1", "--epochs", "2", "--batch-size", "16", "--aug-copies", "1", "--cache", "none",
                 "--json", str(out)]) == 0
    assert [r["lr"] for r in json.loads(out.read_text())["results"]] == [1.0, 0.1]


def test_python_api_lists_still_work(tmp_path):
    import gensis

    res = gensis.evaluate("knn", encoder="pixels", train=str(_npz(tmp_path)), k=[5, 3], cache="none")
    assert [r["k"] for r in res["results"]] == [3, 5]


@pytest.mark.parametrize("argv,dest,value", [
    (["demo", "--methods", "dino", "--methods", "simclr"], "methods", "dino,simclr"),
    (["demo", "--methods", "ibot"], "methods", "ibot"),  # a default is replaced, not extended
    (["demo"], "methods", "dino"),
    (["demo", "--seeds", "0,1", "--seeds", "2"], "seeds", "0,1,2"),
    (["demo", "--stages", "dino", "--stages", "eval"], "stages", "dino,eval"),
    (["eval", "umap", "--encoder", "a", "--encoder", "b", "--data", "d", "--out", "m.png", "--classes", "x",
      "--classes", "y,z"], "encoder", "a,b"),
    (["eval", "umap", "--encoder", "a", "--data", "d", "--out", "m.png", "--classes", "x", "--classes", "y,z"],
     "classes", "x,y,z"),
    (["eval", "robustness", "--encoder", "e", "--train", "t", "--ood", "A", "--ood", "B"], "ood", "A,B"),
    (["bank", "show", "B", "--out", "g.png", "--indices", "1,2", "--indices", "7"], "indices", "1,2,7"),
    (["mil", "predict", "--run", "R", "--feats", "F", "--out", "O", "--slides", "s1", "--slides", "s2"],
     "slides", "s1,s2"),
])
def test_repeated_comma_lists_accumulate(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


def test_single_value_options_keep_the_last_occurrence():
    args = build_parser().parse_args(["eval", "knn", "--encoder", "a", "--encoder", "pixels"])
    assert args.encoder == "pixels"
