"""Keys added to a ``base.yaml`` at the value that reproduces older runs (``gensis.configs.added``) change no
demo stage key, and another value does; the same registry is what ``--resume`` reads (``Task.resume_added``)."""

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from stage_keys import plan_keys  # noqa: E402


def _drop(cfg: dict, key: str) -> dict:
    cfg = copy.deepcopy(cfg)
    *path, last = key.split(".")
    node = cfg
    for p in path:
        node = node[p]
    del node[last]
    return cfg


def test_registry_names_every_family_and_only_keys_whose_default_is_the_old_value():
    from gensis.config import load_config
    from gensis.configs import codegen
    from gensis.configs.added import ADDED, added_keys, reproduces_old

    assert set(ADDED) == set(codegen.families())
    assert added_keys("eldm")["cond.tokens"] == 1
    for family, keys in ADDED.items():
        base = load_config(family, "base")
        for key, old in keys.items():
            node = base
            for p in key.split("."):
                node = node[p]  # a registered key must exist in base.yaml (a typo fails here)
            assert reproduces_old(old, node), f"{family}: {key} defaults to {node!r}, not the old {old!r}"
    with pytest.raises(KeyError, match="families: pretrain, eldm, bank, mil"):
        added_keys("nope")


def test_a_registered_key_at_its_old_value_leaves_the_stage_key_as_without_it():
    from gensis.config import load_config
    from gensis.configs.added import without_added
    from gensis.pipeline.runner import stage_key

    cfg = load_config("eldm", "smoke")
    assert cfg["cond"]["tokens"] == 1
    before = cfg  # the config the code before the keys resolved
    for key in ("cond.tokens", "optim.min_updates", "ae.optim.min_updates"):
        before = _drop(before, key)
    assert without_added("eldm", cfg) == before
    assert stage_key("eldm", without_added("eldm", cfg), "data") == stage_key("eldm", before, "data")
    assert without_added("eldm", before) == before  # an older config is hashed as it is
    two = load_config("eldm", "smoke", ["cond.tokens=2"])
    assert stage_key("eldm", without_added("eldm", two), "data") != stage_key("eldm", before, "data")
    assert without_added("eldm", two)["cond"]["tokens"] == 2
    assert cfg["cond"]["tokens"] == 1  # the resolved config itself is not changed


def test_a_section_emptied_by_registered_keys_goes_too_and_a_bool_is_not_an_int(monkeypatch):
    from gensis.configs import added

    monkeypatch.setitem(added.ADDED, "mil", {"new.a": 0, "new.b": False})
    assert added.without_added("mil", {"x": 1, "new": {"a": 0, "b": False}}) == {"x": 1}
    assert added.without_added("mil", {"x": 1, "new": {"a": 0, "b": True}}) == {"x": 1, "new": {"b": True}}
    assert added.without_added("mil", {"new": {"a": False, "b": 0}}) == {"new": {"a": False, "b": 0}}
    assert added.without_added("mil", {"x": {}}) == {"x": {}}  # an empty section of its own stays


def _keys(tmp: Path, monkeypatch, edit) -> dict:
    """Stage keys of the smoke demo (seed 0, dino) with each resolved config passed through ``edit``."""
    import gensis.config

    real = gensis.config.load_config

    def load_config(family, preset="demo", overrides=(), where="command line"):
        cfg = real(family, preset, overrides, where)
        return cfg if preset == "base" else edit(family, cfg)

    with monkeypatch.context() as m:
        m.setattr(gensis.config, "load_config", load_config)
        return plan_keys(tmp, "smoke", 0, ("dino",))["keys"]


def test_smoke_demo_keys_are_those_of_the_code_before_cond_tokens(tmp_path, monkeypatch):
    """A demo folder made before d471ef7 (whose eldm configs had no cond.tokens) stays up to date."""
    from gensis.configs import added

    today = _keys(tmp_path / "a", monkeypatch, lambda f, c: c)
    before = _keys(tmp_path / "b", monkeypatch, lambda f, c: _drop(c, "cond.tokens") if f == "eldm" else c)
    assert set(today) >= {"dino", "eldm", "bank", "gendino", "pixel"}
    assert today == before
    monkeypatch.setitem(added.ADDED, "eldm", {})  # without the registry, every stage from the E-LDM on is redone
    unregistered = _keys(tmp_path / "c", monkeypatch, lambda f, c: c)
    assert {k for k in today if today[k] != unregistered[k]} == {"eldm", "eldm-figures", "eldm-eval", "bank",
                                                                 "gendino"}


def test_another_value_of_a_registered_key_redoes_the_stages_that_read_it(tmp_path, monkeypatch):
    def tokens(n):
        def edit(f, c):
            if f == "eldm":
                c["cond"]["tokens"] = n
            return c
        return edit

    today = _keys(tmp_path / "a", monkeypatch, tokens(1))
    four = _keys(tmp_path / "b", monkeypatch, tokens(4))
    assert {k for k in today if today[k] != four[k]} == {"eldm", "eldm-figures", "eldm-eval", "bank", "gendino"}


@pytest.mark.parametrize("family", ["pretrain", "bank"])
def test_every_demo_family_hashes_through_the_registry(tmp_path, monkeypatch, family):
    """Registering an existing key of pretrain / bank (as if it were new) at its default makes the demo's keys
    those of a config without it: each stage kind's key goes through ``without_added``."""
    from gensis.configs import added

    key = {"pretrain": "model.init_values", "bank": "gen.image_size"}[family]
    default = _keys_default(family, key)
    monkeypatch.setitem(added.ADDED, family, {key: default})
    registered = _keys(tmp_path / "a", monkeypatch, lambda f, c: c)
    absent = _keys(tmp_path / "b", monkeypatch, lambda f, c: _drop(c, key) if f == family else c)
    assert registered == absent
    monkeypatch.setitem(added.ADDED, family, {})
    plain = _keys(tmp_path / "c", monkeypatch, lambda f, c: c)
    changed = {k for k in plain if plain[k] != registered[k]}
    assert changed >= ({"dino", "gendino", "pixel"} if family == "pretrain" else {"bank", "gendino"})


def _keys_default(family: str, key: str):
    from gensis.config import load_config

    node = load_config(family, "base")
    for p in key.split("."):
        node = node[p]
    return node


def test_task_resume_added_reads_the_registry(monkeypatch):
    from gensis.configs import added
    from gensis.eldm.train import ELDMTask
    from gensis.eldm.train_ae import AutoencoderTask
    from gensis.ssl.train import PretrainTask
    from gensis.train.loop import Task

    task = ELDMTask.__new__(ELDMTask)  # the attribute only: no data, no model
    assert dict(task.resume_added) == {"cond.tokens": 1, "optim.min_updates": None, "ae.optim.min_updates": None}
    monkeypatch.setitem(added.ADDED, "pretrain", {"optim.new_knob": 0})
    assert dict(PretrainTask.__new__(PretrainTask).resume_added) == {"optim.new_knob": 0}
    assert AutoencoderTask.family == "eldm" and dict(Task().resume_added) == {}
