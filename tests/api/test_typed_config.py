"""Typed configs (gensis.configs.typed): generated from base.yaml + schema.py, validated like the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import typing

import pytest

import gensis
import gensis.api
from gensis.config import load_config, load_yaml
from gensis.configs import codegen
from gensis.configs.typed import CONFIGS, ELDMConfig, PretrainConfig, PretrainOptim
from gensis.errors import UserError


def test_generated_module_is_up_to_date():
    assert codegen.main(["--check"]) == 0, "run: python -m gensis.configs.codegen"


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_every_preset_matches_the_cli_resolution(family):
    cls = CONFIGS[family]
    assert cls().to_dict() == load_config(family, "base")  # defaults are base.yaml's
    for preset in ("base", "smoke", "demo", "paper"):
        try:
            expected = load_config(family, preset)
        except UserError:
            continue  # a family without this preset
        cfg = cls.from_preset(preset)
        assert cfg.to_dict() == expected, (family, preset)
        assert cls.from_dict(expected) == cfg


def test_attribute_access_types_and_overrides():
    cfg = gensis.PretrainConfig.from_preset("smoke", {"optim.epochs": 3, "data": {"limit": 10}})
    assert cfg.optim.epochs == 3 and cfg.data.limit == 10 and isinstance(cfg.optim, PretrainOptim)
    assert cfg.to_dict() == load_config("pretrain", "smoke", ["optim.epochs=3", "data.limit=10"])
    assert gensis.PretrainConfig.from_preset("smoke", ["optim.lr=1e-3"]).optim.lr == 1e-3  # CLI parsing
    other = cfg.with_overrides(["optim.epochs=5"])
    assert other.optim.epochs == 5 and cfg.optim.epochs == 3  # a new object; the old one unchanged
    hints = typing.get_type_hints(PretrainOptim)
    assert hints["epochs"] is int and hints["clip_grad"] == float | None  # types from the schema rules
    assert typing.get_type_hints(ELDMConfig)["space"] == typing.Literal["vq", "pixel"]
    d = cfg.to_dict()
    d["optim"]["epochs"] = 99
    assert cfg.optim.epochs == 3  # to_dict copies


def test_bad_values_are_the_cli_one_line_error(tmp_path):
    with pytest.raises(UserError) as e:
        PretrainConfig(optim=PretrainOptim(epochs=0))
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1"}
    r = subprocess.run([sys.executable, "-m", "gensis.cli.main", "pretrain", "--out", str(tmp_path / "r"),
                        "--preset", "smoke", "optim.epochs=0"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip() == f"gensis: error: {e.value}"
    assert str(e.value) == "optim.epochs=0: must be an integer >= 1"
    with pytest.raises(UserError, match=r"unknown config key 'optim.epoks'; did you mean 'optim.epochs'"):
        PretrainConfig.from_preset("smoke", {"optim.epoks": 1})
    with pytest.raises(UserError, match=r"gen.interp=nope: must be one of none, bank, pixel"):
        PretrainConfig.from_dict({"gen": {"interp": "nope"}})
    with pytest.raises(UserError, match="optim.lr"):
        PretrainConfig(optim={"lr": -1.0})  # a section as a mapping is checked the same way
    assert PretrainConfig(optim={"epochs": 7}).optim.epochs == 7
    with pytest.raises(UserError, match="must be a PretrainOptim"):
        PretrainConfig(optim=3)  # type: ignore[arg-type]
    cfg = PretrainConfig.from_preset("smoke")
    cfg.optim.batch_size = -4  # assignment is not checked at once ...
    with pytest.raises(UserError, match=r"optim.batch_size=-4"):
        gensis.api.stage_config("pretrain", cfg)  # ... but by every stage before any work
    with pytest.raises(UserError, match="needs a PretrainConfig"):
        gensis.api.stage_config("pretrain", ELDMConfig())


def test_numpy_and_torch_values_are_plain_python(tmp_path):
    """Values from numpy / torch (a sweep over np.logspace) and tuples are the plain data config.yaml holds:
    np.int64(2) was refused as 'optim.epochs=2: must be an integer >= 1', an np.float64 passed the check and
    then failed when the config was written as YAML."""
    import numpy as np
    import torch

    cfg = PretrainConfig.from_preset("smoke", {"optim.epochs": np.int64(2), "optim.lr": np.float64(1e-3),
                                               "aug.global_scale": (0.3, 1.0), "data.skip_bad_images": np.bool_(True),
                                               "method": np.str_("ibot"), "optim.weight_decay": torch.tensor(0.5)})
    assert cfg.optim.epochs == 2 and type(cfg.optim.epochs) is int and type(cfg.optim.lr) is float
    assert cfg.aug.global_scale == [0.3, 1.0] and cfg.data.skip_bad_images is True and type(cfg.method) is str
    assert cfg.optim.weight_decay == 0.5
    cfg.optim.warmup_epochs = np.int32(0)  # assigned, and through a constructor
    assert type(cfg.optim.warmup_epochs) is int
    assert type(PretrainOptim(lr=np.float32(0.5)).lr) is float
    assert PretrainConfig.from_dict(load_yaml(cfg.to_yaml())) == cfg  # safe YAML, read back equal
    assert cfg.with_overrides({"optim.lr": np.float64(2e-3)}).optim.lr == 2e-3


def test_stage_configs_apply_the_cli_flags():
    cfg = gensis.api.pretrain_config(preset="smoke", method="simclr", bank="somewhere")
    assert cfg.method == "simclr" and cfg.gen.interp == "bank"
    assert gensis.api.pretrain_config(preset="smoke", interp="pixel", bank="b").gen.interp == "pixel"
    with pytest.raises(UserError, match="unknown method"):
        gensis.api.pretrain_config(preset="smoke", method="simclar")
    # `--bank B gen.interp=none` trained with the bank's interpolations, the override silently dropped; an option
    # and an override of its key that disagree were settled by the option without a word
    for ov in (["gen.interp=none"], {"gen.interp": "none"}, {"gen": {"interp": "none"}}):
        assert gensis.api.pretrain_config(preset="smoke", overrides=ov, bank="b").gen.interp == "none"
    with pytest.raises(UserError, match=r"^--interp none and the override gen.interp=pixel disagree"):
        gensis.api.pretrain_config(preset="smoke", overrides=["gen.interp=pixel"], interp="none")
    with pytest.raises(UserError, match=r"^--method dinov2 and the override method=dino disagree"):
        gensis.api.pretrain_config(preset="smoke", overrides={"method": "dino"}, method="dinov2")
    assert gensis.api.pretrain_config(preset="smoke", overrides=["method=ibot"], method="ibot").method == "ibot"
    pix = {"space": "pixel"}
    assert gensis.api.eldm_config(ELDMConfig.from_dict(pix), autoencoder="ae").space == "vq"
    assert gensis.api.eldm_config(preset="smoke", overrides=["space=pixel"], autoencoder="ae").space == "pixel"
    assert gensis.api.eldm_config(preset="smoke", overrides=pix).space == "pixel"


def test_print_config_is_the_typed_config(tmp_path):
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1"}
    r = subprocess.run([sys.executable, "-m", "gensis.cli.main", "pretrain", "--out", str(tmp_path / "r"),
                        "--preset", "smoke", "--method", "ibot", "--print-config", "optim.epochs=2"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    expected = gensis.api.pretrain_config(preset="smoke", overrides=["optim.epochs=2"], method="ibot")
    assert r.stdout == expected.to_yaml()
    assert PretrainConfig.from_dict(__import__("yaml").safe_load(r.stdout)) == expected  # a round trip


def test_a_key_the_classes_lack_is_never_dropped():
    """If base.yaml gains a key and typed.py was not regenerated, building a config says so."""
    data = load_config("pretrain", "smoke")
    data["optim"]["new_key"] = 1
    with pytest.raises(RuntimeError, match=r"no key 'optim.new_key'.*gensis.configs.codegen"):
        PretrainConfig._build(data)


def test_method_selects_the_presets_per_method_values():
    a = PretrainConfig.from_preset("paper", {"method": "ibot"})
    assert a == gensis.api.pretrain_config(preset="paper", method="ibot")
    assert a.to_dict() == load_config("pretrain", "paper", ["method=ibot"])
