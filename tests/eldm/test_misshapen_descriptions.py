"""A description gensis wrote (eldm.json, autoencoder.json, a run's config.yaml) that parses but has not the shape
gensis writes (`{}`, `"sample": 3`, a string for a size: edited by hand, or another tool's file of that name) gave
a KeyError or TypeError traceback from deep inside; now one line naming the file as damaged, and nothing is written."""

from __future__ import annotations

import json
import shutil

import pytest

from gensis.errors import UserError


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory, encoder_run, tiny_npz, tiny_overrides, cli):
    root = tmp_path_factory.mktemp("damaged")
    ae = root / "ae"
    assert cli("eldm", "train-ae", "--data", tiny_npz, "--out", ae, "--preset", "smoke", "--quiet", *tiny_overrides,
               "ae.optim.epochs=1") == 0
    run = root / "eldm"
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--ae", ae, "--out", run, "--preset",
               "smoke", "--quiet", *tiny_overrides, "optim.epochs=1") == 0
    return run


def _edit(path, change):
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


EDITS = {
    "empty": lambda d: d.clear(),
    "sample is a number": lambda d: d.update(sample=3),
    "size is a string": lambda d: d.update(latent_size="x"),
    "no encoder": lambda d: d.pop("encoder"),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_misshapen_eldm_json_is_one_line(edit, vq_run, tmp_path, tiny_npz, cli, capsys):
    import gensis

    run = tmp_path / "eldm"
    shutil.copytree(vq_run, run)
    _edit(run / "eldm.json", EDITS[edit])
    line = f"{run / 'eldm.json'} is damaged ("
    with pytest.raises(UserError, match="it is not a readable E-LDM description"):
        gensis.load_generator(run)
    capsys.readouterr()
    for argv in (["eldm", "sample", "--eldm", run, "--data", tiny_npz, "--out", tmp_path / "s", "--quiet"],
                 ["export", run, "--to", "diffusers", tmp_path / "d"]):
        assert cli(*argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("gensis: error: ") and line in err and "Traceback" not in err, err
        assert not (tmp_path / "s").exists() and not (tmp_path / "d").exists()


@pytest.mark.parametrize("value", [{}, {"model": 3, "image_size": 16, "scale": 1.0}, "SIZE"])
def test_a_misshapen_autoencoder_json_is_one_line(value, vq_run, tmp_path, encoder_run, tiny_npz, tiny_overrides,
                                                   cli, capsys):
    ae = tmp_path / "ae"
    shutil.copytree(vq_run.parent / "ae", ae)
    if value == "SIZE":
        _edit(ae / "autoencoder.json", lambda d: d.update(image_size="x"))
    else:
        (ae / "autoencoder.json").write_text(json.dumps(value))
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--ae", ae, "--out", tmp_path / "e",
               "--preset", "smoke", "--quiet", *tiny_overrides) == 2
    err = capsys.readouterr().err
    assert f"{ae / 'autoencoder.json'} is damaged (" in err and "Traceback" not in err, err


def test_a_run_config_without_its_sections_is_one_line(encoder_run, tmp_path, tiny_npz, cli, capsys):
    run = tmp_path / "enc"
    shutil.copytree(encoder_run, run)
    (run / "config.yaml").write_text("{}\n")
    assert cli("eval", "knn", "--encoder", run, "--train", tiny_npz) == 2
    err = capsys.readouterr().err
    assert f"{run / 'config.yaml'} is damaged (no 'data' section); it is not a readable pretrain config" in err, err
    (run / "config.yaml").write_text("data: {image_size: 16}\nmodel: 3\noptim: {}\ntrain: {}\n")
    assert cli("export", run, "--to", "timm", tmp_path / "t") == 2
    assert "is damaged ('model' is not a section: int)" in capsys.readouterr().err
