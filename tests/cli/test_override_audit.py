"""Dotted overrides that did nothing, or were refused with a misleading line, found by a new user's audit."""

import pytest

from gensis.cli.main import main


def _err(capsys) -> str:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert out == "" and len(lines) == 1 and lines[0].startswith("gensis: error: "), (out, err)
    return lines[0]


@pytest.mark.parametrize("argv,section,method", [
    (["--method", "dino", "ibot.out_dim=10"], "ibot", "dino"),
    (["dinov2.koleo_loss_weight=1"], "dinov2", "dino"),  # the preset's method
    (["method=ibot", "dino.out_dim=10"], "dino", "ibot"),
])
def test_another_methods_key_is_refused(argv, section, method, tmp_path, capsys):
    """`gensis pretrain --method dino ibot.out_dim=10` printed and ran with exit 0, the key ignored (dino reads only
    dino.*); now one line naming the method and --method to give."""
    assert main(["pretrain", "--out", str(tmp_path / "o"), "--preset", "smoke", *argv, "--print-config"]) == 2
    line = _err(capsys)
    assert f"the method is {method}, which reads no {section}.* key" in line and f"--method {section}" in line, line
    assert main(["pretrain", "--out", str(tmp_path / "o"), "--preset", "smoke", "--method", section,
                 *[a for a in argv if "=" in a and not a.startswith("method=")], "--print-config"]) == 0


@pytest.mark.parametrize("override,words", [
    ("optim.lr.x=1", "unknown config key 'optim.lr.x': 'optim.lr' is a value, not a section"),  # was optim.lr={'x': 1}
    ("=3", "override '=3' has no key before '='"),  # was: unknown config key ''
    ("optim.LR=1", "did you mean 'optim.lr'?"),  # was: did you mean 'optim'?
    ("model.arch=inf", "unknown backbone 'inf'"),  # was "model.arch=inf: must be a string" (read as a float)
])
def test_misleading_override_lines(override, words, tmp_path, capsys):
    assert main(["pretrain", "--out", str(tmp_path / "o"), "--preset", "smoke", override, "--print-config"]) == 2
    assert words in _err(capsys)


def test_numbers_in_scientific_notation_and_strings_that_look_like_numbers():
    from gensis.config import parse_overrides

    got = parse_overrides(["a=1e-3", "b=5E4", "c=.5e-3", "d=-2.e3", "e=inf", "f=nan", "g=x=y", "h=[a, 1e-2]", "i=~"])
    assert got == {"a": 1e-3, "b": 5e4, "c": 5e-4, "d": -2e3, "e": "inf", "f": "nan", "g": "x=y",
                   "h": ["a", 0.01], "i": None}


def test_config_option_points_to_preset_file(tmp_path, capsys):
    """`gensis pretrain --config my.yaml` answered "did you mean --print-config?"; a config file is --preset FILE."""
    (tmp_path / "my.yaml").write_text("optim:\n  epochs: 2\n")
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--out", str(tmp_path / "o"), "--config", str(tmp_path / "my.yaml"), "--print-config"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--preset FILE.yaml" in err and "did you mean --print-config" not in err, err
    assert main(["pretrain", "--out", str(tmp_path / "o"), "--preset", str(tmp_path / "my.yaml"), "--print-config"]) == 0
    assert "epochs: 2" in capsys.readouterr().out


def test_per_method_section_of_another_method_is_refused(tmp_path, capsys):
    """A preset's per_method.ibot.dino.out_dim (applied only with ibot, which reads no dino.*) was silently unused."""
    preset = tmp_path / "p.yaml"
    preset.write_text("per_method:\n  ibot:\n    dino:\n      out_dim: 3\n")
    assert main(["pretrain", "--out", str(tmp_path / "o"), "--preset", str(preset), "--print-config"]) == 2
    assert "per_method.ibot.dino" in _err(capsys)
    preset.write_text("per_method:\n  ibot:\n    ibot:\n      out_dim: 3\n")
    assert main(["pretrain", "--out", str(tmp_path / "o"), "--preset", str(preset), "--method", "ibot",
                 "--print-config"]) == 0



def test_train_ae_warns_that_optim_is_the_eldms(tmp_path, capsys):
    """`gensis eldm train-ae optim.epochs=7` trained for ae.optim.epochs (1 in smoke), exit 0, without a word: the
    autoencoder reads data.*, ae.* and train.*. The two E-LDM commands share one config, so one list of overrides
    may serve both (the demo's and the tests' do): a warning line, not a refusal, naming the autoencoder's key."""
    import gensis

    def train_ae(out, *overrides):
        return main(["eldm", "train-ae", "--data", "builtin:digits", "--out", str(tmp_path / out), "--preset", "smoke",
                     "--quiet", "ae.optim.epochs=1", "data.limit=64", "data.image_size=16", "train.threads=1",
                     *overrides])

    assert train_ae("ae", "optim.epochs=7") == 0
    err = capsys.readouterr().err
    assert "gensis: warning: optim.epochs: the E-LDM's setting (`gensis eldm train`), not read by the autoencoder's " \
           "training; its own: ae.optim.epochs" in err, err
    assert train_ae("shared", "optim.epochs=7", "unet.context_dim=8") == 0
    assert "warning" not in capsys.readouterr().err  # a list that sets the E-LDM's own keys too serves both
    gensis.train_autoencoder("builtin:digits", tmp_path / "ae2", preset="smoke",
                             overrides={"ae.optim.epochs": 1, "data.limit": 64, "data.image_size": 16})
    assert "warning" not in capsys.readouterr().err


def test_a_key_inside_a_value_is_one_line(tmp_path, capsys):
    """`optim=3 optim.epochs=5` was a TypeError traceback, and `optim.epochs=5 optim=3` replaced the section without
    a word. (A key given twice takes the last value, as an option given twice; scripts append to a base list.)"""
    out = str(tmp_path / "o")
    assert main(["pretrain", "--out", out, "--preset", "smoke", "optim.epochs=3", "optim.epochs=5", "--print-config"]) == 0
    o, err = capsys.readouterr()
    assert "  epochs: 5\n" in o and not err
    for argv, words in ((["optim=3", "optim.epochs=5"], "sets a key inside 'optim', which an earlier override set"),
                        (["optim.epochs=5", "optim=3"], "replaces the keys an earlier override set inside it")):
        assert main(["pretrain", "--out", out, "--preset", "smoke", *argv, "--print-config"]) == 2
        assert words in _err(capsys)


def test_eldm_train_warns_that_ae_is_the_autoencoders(tmp_path, capsys, monkeypatch):
    """`gensis eldm train --ae AE ae.optim.epochs=8` ran without a word and the key did nothing: the E-LDM uses the
    autoencoder given by --ae, trained before. A warning line, unless the list also sets the E-LDM's own keys (then
    it is one list for both commands, as train-ae's warning above)."""
    import types

    import gensis
    import gensis.eldm.train

    monkeypatch.setattr(gensis.eldm.train, "train", lambda *a, **k: types.SimpleNamespace(path=tmp_path / "e"))
    gensis.train_eldm("enc", "builtin:digits", tmp_path / "e", preset="smoke", overrides=["ae.optim.epochs=8", "data.limit=64"])
    assert "gensis: warning: ae.optim.epochs: the autoencoder's setting (`gensis eldm train-ae`), not read by `eldm " \
           "train`" in capsys.readouterr().err
    gensis.train_eldm("enc", "builtin:digits", tmp_path / "e", preset="smoke",
                      overrides=["ae.optim.epochs=8", "unet.context_dim=8", "space=pixel"])
    gensis.train_eldm("enc", "builtin:digits", tmp_path / "e", preset="smoke", overrides=["optim.epochs=2", "space=pixel"])
    assert "warning" not in capsys.readouterr().err
