"""The slide demo (``gensis wsi demo`` = ``gensis demo --preset wsi``) names only options it has: a refused
override points at what the slide demo offers, and ``gensis demo`` options it does not use are refused, not ignored."""

import pytest

from gensis.cli.main import main
from gensis.errors import UserError
from gensis.pipeline.overrides import WSI_PIPELINE_KEYS, split_overrides


@pytest.mark.parametrize("item", ["pretrain.method=ibot", "pretrain.gen.interp=pixel", "pretrain.train.seed=2",
                                  "eldm.train.seed=2", "bank.gen.seed=2", "mil.cv.seed=2"])
def test_slide_demo_refusals_name_no_option_it_lacks(item):
    with pytest.raises(UserError) as e:
        split_overrides([item], ("pretrain", "eldm", "bank", "mil"), WSI_PIPELINE_KEYS)
    msg = str(e.value)
    assert "the demo sets" in msg and "use --methods" not in msg and "--seeds" not in msg, msg


def test_slide_demo_method_refusal_from_both_commands(tmp_path, capsys):
    for argv in (["wsi", "demo"], ["demo", "--preset", "wsi"]):
        assert main([*argv, "--out", str(tmp_path / "w"), "pretrain.method=ibot"]) == 2
        err = capsys.readouterr().err
        assert "its columns are DINO and Gen-DINO" in err and "use --methods" not in err
    assert not (tmp_path / "w").exists()


def test_the_pipeline_demo_keeps_its_refusals():
    with pytest.raises(UserError, match="use --methods"):
        split_overrides(["pretrain.method=ibot"])


@pytest.mark.parametrize("opt", [["--seeds", "0,1"], ["--methods", "ibot"], ["--data", "x.npz"],
                                 ["--stages", "dino"], ["--no-linear"]])
def test_demo_options_the_slide_demo_lacks_are_refused(tmp_path, capsys, opt):
    assert main(["demo", "--preset", "wsi", "--out", str(tmp_path / "w"), *opt]) == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(lines) == 1 and f"{opt[0]} does not apply to --preset wsi" in lines[0]
    assert not (tmp_path / "w").exists()
