"""``optim.min_updates``: a floor on the updates of a pretraining run (``gensis.train.budget``)."""

import json

import pytest

from gensis.train.budget import epochs_for, raised_note

TINY = ["model.embed_dim=32", "model.num_heads=2", "model.depth=1", "aug.n_local=0", "optim.batch_size=64",
        "data.limit=128", "train.log_every=1", "train.threads=1"]  # 128 images at batch 64: 2 updates per epoch


@pytest.mark.parametrize("epochs,floor,per_epoch,want", [
    (3, None, 50, 3),     # no floor: exactly optim.epochs
    (3, 600, 50, 12),     # 150 updates -> 12 epochs = 600
    (3, 600, 200, 3),     # 600 already
    (3, 600, 250, 3),     # more than the floor: unchanged, never lowered
    (3, 600, 7, 86),      # rounded up: 86 * 7 = 602 >= 600 > 85 * 7
    (1, 5, 2, 3),
])
def test_epochs_are_raised_to_the_floor_and_never_lowered(epochs, floor, per_epoch, want):
    assert epochs_for(epochs, floor, per_epoch) == want
    note = raised_note(epochs, want, per_epoch, floor)
    assert (note is None) == (want == epochs)
    if note:
        assert f"{want} epochs instead of optim.epochs={epochs}" in note and f"min_updates={floor}" in note


def _rows(run):
    return [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("floor,epochs", [(None, 1), (2, 1), (5, 3)])
def test_a_small_set_trains_the_floors_updates_with_the_schedule_stretched_over_them(tmp_path, floor, epochs,
                                                                                    capsys):
    import gensis

    run = gensis.pretrain("builtin:animal-mnist", tmp_path / "r", preset="smoke",
                          overrides=TINY + ["optim.epochs=1", f"optim.min_updates={'null' if floor is None else floor}",
                                            "optim.warmup_epochs=0", "optim.min_lr=0"], quiet=False)
    rows = [r for r in _rows(run) if "lr" in r]
    assert sorted({r["epoch"] for r in rows}) == list(range(epochs))
    assert [r["step"] for r in rows] == list(range(2 * epochs))
    man = json.loads((run / "manifest.json").read_text())
    assert man["epochs_trained"] == epochs and man["updates"] == 2 * epochs
    # one cosine over all the updates trained: decreasing, from the peak lr, not restarted per epoch
    lrs = [r["lr"] for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > lrs[-1] > 0
    err = capsys.readouterr().err
    assert (f"{epochs} epochs instead of optim.epochs=1" in err) == (epochs > 1)


def test_the_floor_is_a_config_key_with_a_one_line_error():
    from gensis.config import load_config
    from gensis.errors import UserError

    assert load_config("pretrain", "demo")["optim"]["min_updates"] == 600
    assert load_config("pretrain", None)["optim"]["min_updates"] is None
    for bad in ("0", "-3", "abc", "2.5"):
        with pytest.raises(UserError, match="optim.min_updates"):
            load_config("pretrain", "demo", [f"optim.min_updates={bad}"])
