"""Commands that read a run take its own data when --data is not given (never builtin:animal-mnist silently):
``eldm train --encoder RUN``, ``eldm sample|eval --eldm RUN``, ``bank generate --eldm RUN``."""

import json

import numpy as np
import pytest

import gensis.api
import gensis.bank.generate
from gensis.cli.main import main
from gensis.config import dump, load_config


def _run(folder, stage, data, family):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(dump(load_config(family, "smoke")))
    (folder / "teacher_backbone.safetensors").write_bytes(b"")
    (folder / "manifest.json").write_text(json.dumps({"stage": stage, "status": "done", "inputs": {"data": data}}))
    return folder


@pytest.fixture()
def mine(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, images=np.zeros((8, 8, 8), np.uint8), labels=np.arange(8) % 2)
    return path


@pytest.fixture()
def calls(monkeypatch):
    seen = {}

    def fake(name, ret):
        def f(*a, **kw):
            seen[name], seen[f"{name}:kw"] = a, kw
            return ret
        return f

    monkeypatch.setattr(gensis.api, "train_eldm", fake("train_eldm", "ELDM"))
    monkeypatch.setattr(gensis.api, "eldm_figures", fake("eldm_figures", []))
    monkeypatch.setattr(gensis.api, "evaluate_eldm", fake("evaluate_eldm", {}))
    monkeypatch.setattr("gensis.eldm.evaluate.format_report", lambda r: "")

    class Result:
        complete = True

        def summary(self):
            return ""

    monkeypatch.setattr(gensis.bank.generate, "generate_bank", fake("generate_bank", Result()))
    return seen


def test_eldm_and_bank_commands_use_the_runs_own_data(tmp_path, mine, calls, capsys):
    enc = _run(tmp_path / "dino", "pretrain", f"{mine}@train", "pretrain")
    eldm = _run(tmp_path / "eldm", "eldm", str(mine), "eldm")
    assert main(["eldm", "train", "--encoder", str(enc), "--out", str(tmp_path / "e")]) == 0
    assert calls["train_eldm"][1] == f"{mine}@train"  # the split the encoder was trained on
    assert f"data: {mine}@train (from the --encoder run's manifest)" in capsys.readouterr().out
    assert main(["eldm", "sample", "--eldm", str(eldm), "--out", str(tmp_path / "s"), "--quiet"]) == 0  # was:
    # 'unrecognized arguments: --quiet', which eldm train-ae / train / eval take
    assert calls["eldm_figures"][1] == str(mine)
    assert main(["eldm", "eval", "--eldm", str(eldm)]) == 0
    assert calls["evaluate_eldm"][1] == str(mine)
    assert f"data: {mine} (from the E-LDM run's manifest)" in capsys.readouterr().out
    assert main(["bank", "generate", "--eldm", str(eldm), "--out", str(tmp_path / "b"), "--preset", "smoke"]) == 0
    assert calls["generate_bank"][1] == str(mine)


def test_given_data_and_generator_only_are_unchanged(tmp_path, mine, calls, capsys):
    eldm = _run(tmp_path / "eldm", "eldm", str(mine), "eldm")
    assert main(["eldm", "eval", "--eldm", str(eldm), "--data", "builtin:digits"]) == 0
    assert calls["evaluate_eldm"][1] == "builtin:digits" and "manifest" not in capsys.readouterr().out
    assert main(["bank", "generate", "--generator", "gensis.bank.fake:FakeGenerator", "--out", str(tmp_path / "b"),
                 "--preset", "smoke"]) == 0
    assert calls["generate_bank"][1] == "builtin:animal-mnist"


def test_moved_data_is_one_line_asking_for_data(tmp_path, calls, capsys):
    eldm = _run(tmp_path / "eldm", "eldm", str(tmp_path / "gone.npz"), "eldm")
    for argv in (["eldm", "eval", "--eldm", str(eldm)], ["eldm", "sample", "--eldm", str(eldm), "--out", "x"],
                 ["bank", "generate", "--eldm", str(eldm), "--out", str(tmp_path / "b")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "which no longer exists" in err and "pass --data DATA" in err
    assert not calls


def _reading(folder, family, stage, data, overrides):
    """A run folder whose config read its data with ``overrides`` (e.g. data.skip_bad_images=true)."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(dump(load_config(family, "smoke", overrides)))
    (folder / "teacher_backbone.safetensors").write_bytes(b"")
    (folder / "manifest.json").write_text(json.dumps({"stage": stage, "status": "done", "inputs": {"data": data}}))
    return folder


def test_the_runs_own_data_is_read_as_the_run_read_it(tmp_path, mine, calls, capsys):
    """A run pretrained with data.skip_bad_images=true (or another held-out split): `eldm train --encoder RUN` and
    `bank generate --eldm RUN` without --data skip the same files and hold out the same images (were: an error on
    the first broken file, and an E-LDM trained on the encoder's held-out images); a key given wins."""
    read = ["data.skip_bad_images=true", "data.val_fraction=0.3"]
    enc = _reading(tmp_path / "dino", "pretrain", "pretrain", str(mine), read)
    assert main(["eldm", "train", "--encoder", str(enc), "--out", str(tmp_path / "e"), "optim.epochs=1"]) == 0
    assert calls["train_eldm:kw"]["overrides"] == ["optim.epochs=1", *read]
    out = capsys.readouterr().out
    assert "data read as the --encoder run read it: data.skip_bad_images=true data.val_fraction=0.3" in out
    eldm = _reading(tmp_path / "eldm", "eldm", "eldm", str(mine), read)
    assert main(["bank", "generate", "--eldm", str(eldm), "--out", str(tmp_path / "b"), "--preset", "smoke",
                 "data.val_fraction=0.25"]) == 0
    assert "data read as the --eldm run read it: data.skip_bad_images=true\n" in capsys.readouterr().out
    assert calls["generate_bank"][0]["data"]["skip_bad_images"] is True
    assert calls["generate_bank"][0]["data"]["val_fraction"] == 0.25
    assert main(["eldm", "train", "--encoder", str(enc), "--data", str(mine), "--out", str(tmp_path / "e2")]) == 0
    assert "read as" not in capsys.readouterr().out  # data given: the command's own settings
    assert calls["train_eldm:kw"]["overrides"] == []


def test_quiet_silences_every_bar_of_the_command_and_only_of_it(tmp_path, mine, calls, monkeypatch):
    """`eldm train --quiet` still drew the bars of its embedding and latent passes ("embed train", "encode
    latents"): --quiet of any command now holds for everything it runs, and is undone when it returns."""
    import os

    seen = []
    monkeypatch.setattr(gensis.api, "train_eldm", lambda *a, **kw: seen.append(os.environ.get("GENSIS_NO_PROGRESS")))
    monkeypatch.delenv("GENSIS_NO_PROGRESS", raising=False)
    enc = _run(tmp_path / "dino", "pretrain", str(mine), "pretrain")
    for quiet in (["--quiet"], []):
        assert main(["eldm", "train", "--encoder", str(enc), "--out", str(tmp_path / "e"), *quiet]) == 0
        assert "GENSIS_NO_PROGRESS" not in os.environ
    assert seen == ["1", None]
