"""Per-method preset values (``per_method`` section, issue 11.9) and the paper preset's original recipes."""

import os
import subprocess
import sys

import pytest
import yaml

from gensis.config import load_config
from gensis.errors import UserError

METHODS = ("dino", "ibot", "dinov2", "simclr")


def test_paper_preset_applies_each_methods_recipe_on_shared_keys():
    dino = load_config("pretrain", "paper")
    assert dino["method"] == "dino" and "per_method" not in dino
    assert dino["aug"]["global_scale"] == [0.4, 1.0] and dino["optim"]["lr"] == 0.0005
    assert dino["model"]["init_values"] is None and dino["model"]["drop_path_rate"] == 0.1

    ibot = load_config("pretrain", "paper", ["method=ibot"])
    assert ibot["aug"]["global_scale"] == [0.25, 1.0] and ibot["aug"]["local_scale"] == [0.05, 0.25]
    assert ibot["optim"]["lr"] == 0.0005 and ibot["ibot"]["teacher_temp"] == 0.07

    v2 = load_config("pretrain", "paper", ["method=dinov2"])
    assert v2["optim"]["lr"] == 0.004 and v2["model"]["drop_path_rate"] == 0.3
    assert v2["model"]["init_values"] == pytest.approx(1e-5)
    assert v2["aug"]["global_scale"] == [0.32, 1.0] and v2["aug"]["local_scale"] == [0.05, 0.32]

    sim = load_config("pretrain", "paper", ["method=simclr"])
    assert sim["optim"]["betas"] == [0.9, 0.95] and sim["optim"]["clip_grad"] is None
    assert sim["optim"]["weight_decay"] == sim["optim"]["weight_decay_end"] == 0.1
    assert sim["optim"]["warmup_epochs"] == 1 and sim["optim"]["min_lr"] == 0
    assert sim["aug"]["global_scale"] == [0.08, 1.0] and sim["aug"]["solarize"] == 0
    # what every method shares stays the preset's own value
    for cfg in (ibot, v2, sim):
        assert cfg["optim"]["epochs"] == 100 and cfg["optim"]["batch_size"] == 1024 and cfg["aug"]["n_local"] == 8


def test_user_overrides_win_over_per_method_and_method_from_any_source(tmp_path):
    cfg = load_config("pretrain", "paper", ["method=dinov2", "optim.lr=0.001", "model.init_values=null"])
    assert cfg["optim"]["lr"] == 0.001 and cfg["model"]["init_values"] is None
    assert cfg["model"]["drop_path_rate"] == 0.3  # the rest of the recipe still applies
    # the method named by the preset itself selects its per_method delta too
    p = tmp_path / "mine.yaml"
    p.write_text(yaml.safe_dump({"method": "ibot", "optim": {"lr": 0.002},
                                 "per_method": {"ibot": {"optim": {"lr": 0.003}}, "dino": {"optim": {"lr": 0.1}}}}))
    assert load_config("pretrain", str(p))["optim"]["lr"] == 0.003
    assert load_config("pretrain", str(p), ["method=dino"])["optim"]["lr"] == 0.1
    assert load_config("pretrain", str(p), ["method=simclr"])["optim"]["lr"] == 0.002
    # nested-dict overrides (gensis.make_config, gensis.pretrain(method=...)) select the method the same way
    import gensis

    assert gensis.make_config("pretrain", "paper", {"method": "dinov2"})["optim"]["lr"] == 0.004
    assert gensis.make_config("pretrain", "paper", ["method=dinov2"])["optim"]["lr"] == 0.004


def _preset(tmp_path, per_method) -> str:
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump({"optim": {"epochs": 2}, "per_method": per_method}))
    return str(p)


@pytest.mark.parametrize("per_method,message", [
    ({"ibto": {"optim": {"lr": 0.1}}}, "unknown method 'ibto' in preset '{p}' per_method (valid: dino, ibot, dinov2, "
                                       "simclr); did you mean 'ibot'?"),
    ({"ibot": {"optim": {"lr": -1}}}, "optim.lr=-1: must be a finite number > 0 (in preset '{p}' per_method.ibot)"),
    ({"simclr": {"optim": {"lrr": 0.1}}}, "unknown config key 'optim.lrr'; did you mean 'optim.lr'? "
                                          "(in preset '{p}' per_method.simclr)"),
    ({"ibot": {"method": "dino"}}, "per_method.ibot in preset '{p}' cannot set 'method'"),
    ({"ibot": 3}, "per_method.ibot in preset '{p}' must be a mapping of config keys"),
    ([1, 2], "'per_method' in preset '{p}' must map method names to config deltas"),
])
def test_bad_per_method_sections_are_one_line_errors_even_for_other_methods(tmp_path, per_method, message):
    p = _preset(tmp_path, per_method)
    with pytest.raises(UserError) as e:
        load_config("pretrain", p)  # the selected method is dino: every section is still checked
    assert str(e.value) == message.format(p=p)


def test_per_method_only_in_families_with_a_method(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text(yaml.safe_dump({"per_method": {"dino": {}}}))
    with pytest.raises(UserError, match="the eldm config has no 'method'"):
        load_config("eldm", str(p))
    with pytest.raises(UserError, match=r"^unknown method .mocov3. \(valid: dino, ibot, dinov2, simclr\)$"):
        load_config("pretrain", "smoke", ["method=mocov3"])


def test_demo_stage_key_follows_the_per_method_values(tmp_path):
    """The demo keys each stage by its resolved config: editing a method's per_method value redoes its stages
    (and only its stages)."""
    from gensis.pipeline.demo import DemoOptions, _Keys
    from gensis.pipeline.runner import stage_key

    def keys(lr: float) -> dict:
        p = tmp_path / f"p{lr}.yaml"
        p.write_text(yaml.safe_dump({"per_method": {"ibot": {"optim": {"lr": lr}}}}))
        k = _Keys(DemoOptions(preset=str(p)))
        return {m: stage_key("pretrain", k.config("pretrain", [f"method={m}"])) for m in METHODS}

    a, b = keys(0.001), keys(0.002)
    assert a["ibot"] != b["ibot"]
    assert all(a[m] == b[m] for m in METHODS if m != "ibot")


# ---- the paper preset's baseline (issue 11, gap 3) ------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_paper_preset_without_bank_is_the_baseline(method):
    assert load_config("pretrain", "paper", [f"method={method}"])["gen"]["interp"] == "none"


def test_paper_preset_through_the_cli_with_and_without_bank(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def resolved(*args: str) -> dict:
        r = subprocess.run([sys.executable, "-m", "gensis.cli.main", "pretrain", "--preset", "paper", "--out",
                            str(tmp_path / "run"), "--print-config", *args], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        return yaml.safe_load(r.stdout)

    base = resolved("--method", "dinov2")
    assert base["gen"]["interp"] == "none" and base["model"]["init_values"] == pytest.approx(1e-5)
    assert resolved("--method", "dinov2", "--bank", str(tmp_path / "bank"))["gen"]["interp"] == "bank"
    assert not (tmp_path / "run").exists()


def test_interp_bank_without_a_bank_fails_before_any_work(tmp_path):
    from gensis.ssl.train import train

    cfg = load_config("pretrain", "smoke", ["gen.interp=bank"])
    with pytest.raises(UserError, match="gen.interp=bank needs --bank BANK"):
        train(cfg, "builtin:animal-mnist", tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_optim_betas_reach_adamw(tmp_path):
    """``optim.betas`` (StableRep's AdamW (0.9, 0.95) in the paper preset's simclr recipe) is the optimizer's."""
    import json

    import numpy as np

    import gensis
    from gensis.checkpoint import load_checkpoint

    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
    tiny = {"data.image_size": 16, "model.patch_size": 4, "model.embed_dim": 32, "model.depth": 1,
            "model.num_heads": 2, "simclr.mlp_dim": 16, "simclr.emb_dim": 8, "optim.batch_size": 8,
            "optim.epochs": 1, "optim.warmup_epochs": 0, "train.threads": 1, "train.amp": "off",
            "data.limit": None, "optim.betas": [0.9, 0.95]}
    run = gensis.pretrain(images, tmp_path / "run", preset="smoke", overrides=tiny, method="simclr")
    _, info = load_checkpoint(run / "checkpoint.safetensors")
    groups = info["param_groups"]
    betas = {tuple(g["betas"]) for gs in groups.values() for g in gs}
    assert betas == {(0.9, 0.95)}, json.dumps(groups)[:300]
