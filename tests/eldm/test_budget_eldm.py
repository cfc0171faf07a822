"""``optim.min_updates`` / ``ae.optim.min_updates``: the E-LDM and its autoencoder train at least that many updates
(``gensis.train.budget``; the pretraining side is in tests/train/test_budget.py)."""

import json

import pytest


def _epochs_and_steps(run):
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    return sorted({r["epoch"] for r in rows}), max(r["step"] for r in rows)


@pytest.mark.parametrize("floor,epochs", [("null", 1), ("13", 3)])
def test_the_denoiser_trains_the_floors_updates(tmp_path, encoder_run, tiny_npz, tiny_overrides, cli, floor, epochs,
                                                capsys):
    out = tmp_path / "e"
    # 96 training images at batch 16: 6 updates per epoch; a floor of 13 needs 3 epochs
    assert cli("eldm", "train", "--encoder", encoder_run, "--data", tiny_npz, "--out", out, "--preset", "smoke",
                   *tiny_overrides, "space=pixel", "optim.epochs=1", f"optim.min_updates={floor}", "train.log_every=1") == 0
    assert _epochs_and_steps(out) == (list(range(epochs)), 6 * epochs - 1)
    man = json.loads((out / "manifest.json").read_text())
    assert (man["epochs_trained"], man["updates"]) == (epochs, 6 * epochs)
    assert ("3 epochs instead of optim.epochs=1" in capsys.readouterr().err) == (epochs > 1)


@pytest.mark.parametrize("floor,epochs", [("null", 1), ("7", 2)])
def test_the_autoencoder_trains_the_floors_updates(tmp_path, tiny_npz, tiny_overrides, cli, floor, epochs, capsys):
    out = tmp_path / "ae"
    assert cli("eldm", "train-ae", "--data", tiny_npz, "--out", out, "--preset", "smoke", *tiny_overrides,
                   "ae.optim.batch_size=16", "ae.optim.epochs=1", f"ae.optim.min_updates={floor}",
                   "train.log_every=1") == 0
    assert _epochs_and_steps(out) == (list(range(epochs)), 6 * epochs - 1)
    assert ("2 epochs instead of ae.optim.epochs=1" in capsys.readouterr().err) == (epochs > 1)
