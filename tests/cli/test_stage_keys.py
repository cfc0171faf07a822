"""The demo's stage keys (and the command lines it prints), in the folder of an earlier demo, are those of the code
that ran stages through the CLI's ``main(argv)``: demo folders made before the pipeline called the library directly
stay up to date.

The fixture was recorded by that code (``tests/cli/stage_keys.py``); the configs it resolved are replayed, so
later edits of presets or ``base.yaml`` (which rightly change keys) do not make this test fail."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from stage_keys import SCENARIOS, plan_keys  # noqa: E402

FIXTURE = json.loads((Path(__file__).parent / "stage_keys_smoke.json").read_text())


@pytest.mark.parametrize("name,preset,seed,methods", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_stage_keys_and_commands_are_those_recorded_by_the_cli_based_pipeline(tmp_path, name, preset, seed,
                                                                               methods):
    rec = FIXTURE[name]
    now = plan_keys(tmp_path / name, preset, seed, methods, frozen=rec)
    assert now["keys"] == rec["keys"]
    assert now["commands"] == rec["commands"]
    assert sorted(json.dumps(c[:3]) for c in now["configs"]) == sorted(json.dumps(c[:3]) for c in rec["configs"])


def test_every_stage_calls_the_library_with_the_config_its_key_hashes(tmp_path, monkeypatch):
    """Each stage's call gets a typed config equal to the resolved dict its key is the hash of (no CLI)."""
    import gensis.api
    import gensis.cli.main
    from gensis.pipeline import demo
    from gensis.pipeline.runner import Pipeline

    seen = {}

    def fake(kind):
        def f(*a, config=None, **kw):
            seen.setdefault(kind, []).append((a, config, kw))
            run = Path(a[-1])  # the out argument
            run.mkdir(parents=True, exist_ok=True)
            (run / "manifest.json").write_text(json.dumps({"stage": kind, "val": {"val_mse": 0.5}}))
            return run
        return f

    monkeypatch.setattr(gensis.cli.main, "main", lambda *a, **k: pytest.fail("the pipeline called the CLI"))
    for fn in ("pretrain", "train_eldm", "train_autoencoder"):
        monkeypatch.setattr(gensis.api, fn, fake(fn))
    calls = []
    monkeypatch.setattr(Pipeline, "run", lambda self, st: calls.append(st) or self.out / st.name)
    opts = demo.DemoOptions(preset="demo", out=str(tmp_path), seed=1, stages=("dino", "eldm", "gendino", "pixel"),
                            quiet=True)
    demo.run_pipeline(opts, tmp_path, 1)
    from gensis.config import load_config

    by = {st.name: st for st in calls}
    for name in ("dino", "eldm-ae", "eldm", "gendino", "pixel"):
        by[name].call(False)
    (_, dino_cfg, dino_kw), (_, gen_cfg, gen_kw), (_, pix_cfg, pix_kw) = seen["pretrain"]
    assert dino_cfg.to_dict() == load_config("pretrain", "demo", ["train.seed=1"])
    assert gen_cfg.to_dict() == load_config("pretrain", "demo", ["train.seed=1", "gen.interp=bank"])
    assert gen_kw["bank"] == tmp_path / "bank" and pix_kw["interp"] == "pixel"
    assert pix_cfg.to_dict()["gen"]["interp"] == "pixel"
    (eldm_a, eldm_cfg, eldm_kw), = seen["train_eldm"]
    assert eldm_cfg.to_dict() == load_config("eldm", "demo", ["train.seed=1"])
    assert eldm_kw["autoencoder"] == tmp_path / "eldm-ae" and eldm_a[0] == tmp_path / "dino"
    assert seen["train_autoencoder"][0][1].to_dict() == load_config("eldm", "demo", [])
