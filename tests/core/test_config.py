import pytest

from gensis.config import load_config, parse_overrides
from gensis.errors import UserError


def test_presets_resolve_and_override():
    cfg = load_config("pretrain", "smoke", ["optim.epochs=3", "optim.lr=1e-3", "aug.global_scale=[0.3,1.0]"])
    assert cfg["optim"]["epochs"] == 3 and isinstance(cfg["optim"]["epochs"], int)
    assert cfg["optim"]["lr"] == pytest.approx(1e-3)
    assert cfg["aug"]["global_scale"] == [0.3, 1.0]
    assert cfg["model"]["patch_size"] == 7  # from the smoke preset


@pytest.mark.parametrize("key,hint", [("optim.epoks=3", "optim.epochs"), ("optm.epochs=3", "optim.epochs"),
                                      ("dino.teacher_tmp=0.1", "dino.teacher_temp")])
def test_typo_names_closest_key(key, hint):
    with pytest.raises(UserError) as e:
        load_config("pretrain", "demo", [key])
    assert key.split("=")[0] in str(e.value) and hint in str(e.value)


def test_bad_override_and_preset():
    with pytest.raises(UserError, match="key=value"):
        load_config("pretrain", "demo", ["optim.epochs"])
    with pytest.raises(UserError, match="did you mean 'demo'"):
        load_config("pretrain", "dem")
    with pytest.raises(UserError, match="section"):
        load_config("pretrain", "demo", ["optim=3"])


def test_parse_overrides_nested():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


# ---- schema (issue 10.3) -------------------------------------------------------------------------------

from gensis.config import check_value, describe, implied_rule  # noqa: E402
from gensis.configs.schema import RULES, Float, Int, List, OneOf  # noqa: E402

FAMILIES = ("pretrain", "eldm", "bank")


def _shipped_presets():
    from importlib import resources

    root = resources.files("gensis.configs")
    return [(f.name, p.name[:-5]) for f in root.iterdir() if f.is_dir() and not f.name.startswith("_")
            for p in f.iterdir() if p.name.endswith(".yaml")]


@pytest.mark.parametrize("family,preset", _shipped_presets())
def test_every_shipped_preset_passes_its_schema(family, preset):
    load_config(family, preset)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_explicit_rule_names_an_existing_key(family):
    from gensis.config import _preset_text, _read_yaml, dotted_keys

    keys = set(dotted_keys(_read_yaml(_preset_text("base", family), "base")))
    assert set(RULES[family]) <= keys, set(RULES[family]) - keys


@pytest.mark.parametrize("family,override,expected", [
    ("pretrain", "optim.epochs=0", "optim.epochs=0: must be an integer >= 1"),
    ("pretrain", "optim.epochs=-1", "optim.epochs=-1: must be an integer >= 1"),
    ("pretrain", "optim.batch_size=0", "optim.batch_size=0: must be an integer >= 1"),
    ("pretrain", "data.val_fraction=nan", "data.val_fraction=nan: must be a finite number in [0, 1)"),
    ("pretrain", "optim.lr=nan", "optim.lr=nan: must be a finite number > 0"),
    ("pretrain", "dino.teacher_temp=inf", "dino.teacher_temp=inf: must be a finite number > 0"),
    ("pretrain", "optim.epochs=three", "optim.epochs=three: must be an integer >= 1"),
    ("pretrain", "optim.epochs=2.5", "optim.epochs=2.5: must be an integer >= 1"),
    ("pretrain", "gen.interp=pixels", "gen.interp=pixels: must be one of none, bank, pixel"),
    ("pretrain", "train.device=gpu", "train.device=gpu: must be one of auto, cpu, cuda, cuda:N"),
    ("pretrain", "aug.global_scale=[0.9,0.2]", "aug.global_scale=[0.9,0.2]: must be a list of 2 finite numbers"),
    ("pretrain", "gen.alphas=[0.5,nan]", "gen.alphas=[0.5,nan]: must be a non-empty list"),
    ("pretrain", "dino.norm_last_layer=3", "dino.norm_last_layer=3: must be true or false"),
    ("pretrain", "data.limit=0", "data.limit=0: must be an integer >= 1 or null"),
    ("eldm", "ae.optim.epochs=0", "ae.optim.epochs=0: must be an integer >= 1"),
    ("eldm", "cond.mode=cross", "cond.mode=cross: must be one of cross_attn, time, both"),
    ("eldm", "ema.decay=1.5", "ema.decay=1.5: must be a finite number in [0, 1]"),
    ("bank", "storage.codec=gif", "storage.codec=gif: must be one of png, webp, jpeg, raw"),
    ("bank", "storage.shard_size=0", "storage.shard_size=0: must be an integer >= 1"),
    ("bank", "gen.guidance=nan", "gen.guidance=nan: must be a finite number >= 0 or null"),
])
def test_bad_values_are_one_line_naming_key_value_and_rule(family, override, expected):
    with pytest.raises(UserError) as e:
        load_config(family, "smoke", [override])
    msg = str(e.value)
    assert msg.startswith(expected) and "\n" not in msg


def test_good_values_and_nulls_pass():
    cfg = load_config("pretrain", "smoke", ["train.device=cuda:1", "optim.lr=1", "optim.clip_grad=null",
                                            "model.patch_size=null", "data.limit=8"])
    assert cfg["optim"]["lr"] == 1 and cfg["optim"]["clip_grad"] is None
    load_config("eldm", "smoke", ["sample.clip=1.0", "sample.clip=off", "diffusion.min_snr_gamma=5"])
    load_config("bank", "smoke", ["gen.guidance=null", "gen.steps=3"])


def test_keys_without_rule_are_checked_by_their_defaults_type():
    # what another module's new section gets for free
    assert implied_rule(3).kind == "int" and not check_value(2.5, implied_rule(3))
    assert check_value(2, implied_rule(0.5)) and not check_value(float("nan"), implied_rule(0.5))
    assert not check_value("yes", implied_rule(True)) and not check_value(1, implied_rule("a"))
    assert check_value([1, 2], implied_rule([0])) and not check_value(["a"], implied_rule([0]))
    assert check_value(None, implied_rule(None)) and not check_value(None, implied_rule(1))
    assert not check_value(True, implied_rule(1))  # a bool is not an int
    with pytest.raises(UserError, match=r"^train.log_every=1.5: must be an integer"):
        load_config("pretrain", "smoke", ["train.log_every=1.5"])


def test_rule_descriptions():
    assert describe(Int(ge=1)) == "an integer >= 1"
    assert describe(Float(ge=0, lt=1)) == "a finite number in [0, 1)"
    assert describe(OneOf("a", "b", nullable=True)) == "one of a, b or null"
    assert describe(List(Int(ge=0), nonempty=True)) == "a non-empty list of integers >= 0"


def test_yaml_off_is_accepted_where_off_is_a_choice():
    assert load_config("pretrain", "smoke", ["train.amp=off"])["train"]["amp"] is False  # YAML 1.1 boolean
    with pytest.raises(UserError, match="train.amp=true: must be one of auto, bf16, off"):
        load_config("pretrain", "smoke", ["train.amp=true"])


def test_a_preset_file_reads_exponent_floats_as_the_command_line_does(tmp_path):
    """PyYAML (YAML 1.1) reads `lr: 1e-3` as the string '1e-3', so a user's preset file failed with
    'optim.lr=1e-3: must be a finite number > 0'; the command line's optim.lr=1e-3 was a float already."""
    import yaml

    from gensis.config import load_config

    p = tmp_path / "mine.yaml"
    p.write_text("optim:\n  lr: 1e-3\n  epochs: 3\n  weight_decay: 5E-2\ndata: {val_fraction: .25}\n")
    cfg = load_config("pretrain", str(p))
    assert cfg["optim"]["lr"] == 0.001 and cfg["optim"]["weight_decay"] == 0.05
    assert cfg["optim"]["epochs"] == 3 and isinstance(cfg["optim"]["epochs"], int)
    assert cfg["data"]["val_fraction"] == 0.25
    over = load_config("pretrain", str(p), ["optim.lr=1e-3", "optim.weight_decay=5E-2"])  # the command line's way
    assert over == cfg
    assert yaml.safe_load("x: 1e-3") == {"x": "1e-3"}  # PyYAML itself is left as it is


def test_an_unknown_preset_lists_the_family_s_own_presets():
    """mil's presets are base and smoke (it listed the image families' smoke, demo, small, paper, gpu); pretrain's
    include histo and histo-cpu, which neither the message nor --help named."""
    with pytest.raises(UserError, match=r"valid presets: smoke, base$"):
        load_config("mil", "foo")
    with pytest.raises(UserError, match=r"valid presets: smoke, demo, small, paper, gpu, histo, histo-cpu, base$"):
        load_config("pretrain", "foo")
