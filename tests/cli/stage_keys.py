"""Record the demo's stage keys without running any stage (helper of test_stage_keys.py).

``plan_keys`` replaces ``Pipeline.run`` by a recorder, runs ``run_pipeline`` for the stages that write run
folders and returns ``{stage name: key}``, the command line each stage prints, plus every config resolution
the keys were derived from. With
``frozen`` (a recording), the keys are planned in a demo folder holding the recording's stages, finished (some
keys are kept from such a folder: ``demo._autoencoder_stage``), and config resolution and the data identity come from the recording instead of today's
presets, so the comparison checks the key derivation itself, not whether someone edited ``base.yaml`` since.

Re-record the fixture (only when the key derivation is meant to change, which makes existing demo folders
redo their stages)::

    PYTHONPATH=src python tests/cli/stage_keys.py > tests/cli/stage_keys_smoke.json
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

SCENARIOS = [  # (name, preset, seed, methods); demo: latent space, so the autoencoder stage too
    ("smoke-seed0-dino", "smoke", 0, ("dino",)),
    ("smoke-seed3-dino-simclr", "smoke", 3, ("dino", "simclr")),
    ("demo-seed1-dino", "demo", 1, ("dino",)),
]
STAGES = ("dino", "eldm", "bank", "gendino", "pixel")  # eval and report have no key


def plan_keys(out: Path, preset: str, seed: int, methods: tuple[str, ...], frozen: dict | None = None) -> dict:
    import gensis.config
    import gensis.data.sources
    from gensis.pipeline import demo
    from gensis.pipeline.runner import Pipeline

    keys: dict[str, str] = {}
    commands: dict[str, str] = {}  # the command line each stage prints (to reproduce it by hand)
    configs: list[list] = []
    real_load = gensis.config.load_config
    real_open = gensis.data.sources.open_data
    recorded = {json.dumps(c[:3], sort_keys=True): c[3] for c in (frozen or {}).get("configs", [])}

    def load_config(family, preset="demo", overrides=(), where="command line"):
        ident = [family, preset, list(overrides) if not isinstance(overrides, dict) else overrides]
        if preset == "base":  # the schema's defaults (typed configs complete themselves with them), not a stage's
            return real_load(family, preset, overrides, where)
        if frozen is not None:
            k = json.dumps(ident, sort_keys=True)
            if k not in recorded:
                raise AssertionError(f"config resolved that the recording does not have: {ident}")
            cfg = json.loads(json.dumps(recorded[k]))
        else:
            cfg = real_load(family, preset, overrides, where)
        configs.append([*ident, cfg])
        return cfg

    def open_data(spec, split="train", *a, **kw):
        if frozen is not None and split == "all":
            return SimpleNamespace(identity=frozen["data_identity"])
        return real_open(spec, split, *a, **kw)

    def record(self, stage):
        keys[stage.name] = stage.key
        commands[stage.name] = " ".join(stage.argv).replace(str(out), "OUT")
        return self.out / stage.name

    if frozen is not None:  # the recording's demo folder, its stages finished (what must stay up to date)
        out.mkdir(parents=True, exist_ok=True)
        (out / "stages.json").write_text(json.dumps(frozen["keys"]))
        for name in frozen["keys"]:
            (out / name).mkdir(exist_ok=True)
            (out / name / "manifest.json").write_text('{"status": "done"}')
    opts = demo.DemoOptions(preset=preset, data="builtin:animal-mnist", out=str(out), seed=seed, stages=STAGES,
                            quiet=True, methods=methods)
    with mock.patch.object(gensis.config, "load_config", load_config), \
            mock.patch.object(gensis.data.sources, "open_data", open_data), \
            mock.patch.object(Pipeline, "run", record), contextlib.redirect_stdout(io.StringIO()):
        demo.run_pipeline(opts, Path(out), seed)
    ident = frozen["data_identity"] if frozen is not None else real_open("builtin:animal-mnist", "all").identity
    unique = {json.dumps(c[:3], sort_keys=True): c for c in configs}
    return {"keys": keys, "commands": commands, "data_identity": ident, "configs": list(unique.values())}


def record_all(tmp: Path) -> dict:
    return {"_note": "stage keys of `gensis demo` (smoke and demo presets) as recorded by "
                     "tests/cli/stage_keys.py; see there",
            **{name: plan_keys(tmp / name, preset, seed, methods) for name, preset, seed, methods in SCENARIOS}}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        json.dump(record_all(Path(d)), sys.stdout, indent=1, sort_keys=True)
        print()
