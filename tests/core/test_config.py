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
