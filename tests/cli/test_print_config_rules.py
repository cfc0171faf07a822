"""``--print-config`` runs the checks that combine keys (``gensis.configs.whole``), as the run does: a config
it prints is one the run accepts, and one the run refuses is the run's one line, exit 2."""

import pytest

from gensis.cli.main import main

CASES = [
    (["pretrain", "data.image_size=30", "model.patch_size=7"], "is not a multiple of the ViT's patch size 7"),
    (["pretrain", "dino.sk_queue=8", "dino.centering=centering"], "needs dino.centering=sinkhorn_knopp"),
    (["pretrain", "--method", "ibot", "ibot.pred_ratio=[0.9]", "ibot.pred_ratio_var=[0.2]"], "ibot.pred_ratio="),
    (["eldm", "train", "--encoder", "enc", "cond.mode=time", "cond.tokens=4"], "cond.tokens=4 needs cross-attention"),
    (["eldm", "train-ae", "data.image_size=30"], "divisible by the autoencoder's factor"),
]


@pytest.mark.parametrize("argv,words", CASES)
def test_print_config_refuses_what_the_run_refuses(argv, words, tmp_path, capsys):
    """Before: printed with exit 0, refused only when the run started. Now: the run's line, exit 2."""
    assert main([*argv, "--out", str(tmp_path / "o"), "--print-config"]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == "" and len(lines) == 1 and words in lines[0], (out, err)
    assert not (tmp_path / "o").exists()


def test_the_run_checks_with_the_same_function(tmp_path):
    """The run's own check is ``check_whole`` (one copy of each rule): called on the resolved dicts."""
    from gensis.api import eldm_config, pretrain_config
    from gensis.configs.whole import check_whole
    from gensis.errors import UserError

    with pytest.raises(UserError, match="cond.tokens=4 needs cross-attention"):
        check_whole("eldm", eldm_config(overrides=["cond.mode=time", "cond.tokens=4"]).to_dict())
    check_whole("eldm-ae", eldm_config(overrides=["cond.mode=time", "cond.tokens=4"]).to_dict())  # not read there
    check_whole("pretrain", pretrain_config(preset="smoke").to_dict())


def test_a_good_config_still_prints(tmp_path, capsys):
    assert main(["pretrain", "--preset", "smoke", "--out", str(tmp_path / "o"), "--print-config"]) == 0
    assert "image_size:" in capsys.readouterr().out
