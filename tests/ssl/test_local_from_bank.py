"""gen.local_from_bank=true where there are no local crops (SimCLR, aug.n_local=0) says, once, that it does nothing."""

from __future__ import annotations

import pytest

from gensis.cli.main import main

TINY = ["--preset", "smoke", "train.threads=1", "train.amp=off", "data.limit=64", "optim.batch_size=32",
        "optim.epochs=1", "model.embed_dim=32", "model.num_heads=2", "model.depth=1"]
NEEDLE = "gensis: warning: gen.local_from_bank=true has no effect: there are no local crops"


@pytest.mark.parametrize("over,why", [(["--method", "simclr"], "(simclr uses none)"),
                                      (["aug.n_local=0"], "(aug.n_local=0)")])
def test_local_from_bank_without_local_crops_warns_once(tmp_path, capsys, over, why):
    assert main(["pretrain", "--out", str(tmp_path / "run"), *TINY, *over, "gen.local_from_bank=true"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "local_from_bank" in line] == [f"{NEEDLE} {why}"], err


def test_local_from_bank_with_local_crops_says_nothing(tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "run"), *TINY, "aug.n_local=2", "gen.local_from_bank=true"]) == 0
    assert "local_from_bank" not in capsys.readouterr().err
