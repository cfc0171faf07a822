"""``gensis demo pretrain.optim.epochs=5 eldm.optim.epochs=4 bank.gen.num_generative=2``: stage-prefixed config
overrides, checked like the stages' own key=value overrides, part of each stage's key (no override: the keys
of tests/cli/test_stage_keys.py), shown in the header and the report."""

import json
import os
from pathlib import Path
from unittest import mock

import pytest

from gensis.cli.main import main
from gensis.errors import UserError
from gensis.pipeline.overrides import split_overrides

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
STAGES = ("dino", "eldm", "bank", "gendino", "pixel")


def _plan(out: Path, data: str, overrides=(), methods=("dino",)) -> dict:
    """{stage: (key, printed command, the config the stage is called with)} without running anything (preset
    demo: latent space, so the autoencoder stage too)."""
    from gensis.pipeline import demo
    from gensis.pipeline.runner import Pipeline

    seen = {}

    def record(self, stage):
        cfg = None
        if stage.call is not None and stage.call.__closure__:
            cells = [c.cell_contents for c in stage.call.__closure__]
            cfg = next((c.to_dict() for c in cells if hasattr(c, "to_dict")), None)
            cfg = cfg or next((list(c) for c in cells if isinstance(c, (list, tuple))), None)
        seen[stage.name] = (stage.key, " ".join(stage.argv), cfg)
        return self.out / stage.name

    opts = demo.DemoOptions(preset="demo", data=data, out=str(out), seed=0, stages=STAGES, quiet=True,
                            methods=methods, overrides=tuple(overrides))
    with mock.patch.object(Pipeline, "run", record):
        demo.run_pipeline(opts, out, 0)
    return seen


def test_split_by_prefix_in_order():
    assert split_overrides(["pretrain.optim.epochs=5", "bank.gen.num_generative=2", "pretrain.data.limit=100",
                            "eldm.optim.epochs=4"]) == {
        "pretrain": ["optim.epochs=5", "data.limit=100"], "eldm": ["optim.epochs=4"],
        "bank": ["gen.num_generative=2"]}
    assert split_overrides([]) == {"pretrain": [], "eldm": [], "bank": []}


@pytest.mark.parametrize("item,msg", [
    ("optim.epochs=5", "unknown stage prefix 'optim'; valid prefixes: pretrain, eldm, bank"),
    ("mil.cv.folds=3", "unknown stage prefix 'mil'; valid prefixes: pretrain, eldm, bank"),
    ("pretrain=3", "name a pretrain config key after 'pretrain.'"),
    ("pretrain.optim.epochs", "must look like STAGE.key=value"),
    ("pretrain.method=ibot", "use --methods"),
    ("pretrain.gen={interp: pixel}", "sets pretrain.gen.interp itself"),
    ("eldm.train.seed=3", "use --seed / --seeds"),
    ("bank.data.limit=10", "use pretrain.data.limit"),
])
def test_bad_prefixes_and_keys_the_demo_sets(item, msg):
    with pytest.raises(UserError, match=msg.replace("(", r"\(").replace(".", r"\.")):
        split_overrides([item])


@pytest.mark.parametrize("override,stage_argv", [
    ("optim.epoks=5", ["pretrain", "--out", "{tmp}/run"]),
    ("optim.epochs=0", ["pretrain", "--out", "{tmp}/run"]),
    ("data.image_size=32", ["pretrain", "--out", "{tmp}/run"]),  # not a multiple of the 7-px patches: was found
    # only when the dino stage started, after the demo had made its folder (its --help gave it as the example)
    ("optim.epochs=x", ["eldm", "train", "--encoder", "{tmp}", "--out", "{tmp}/e"]),
    ("gen.num_generative=-1", ["bank", "generate", "--eldm", "{tmp}", "--out", "{tmp}/b"]),
])
def test_a_bad_override_is_the_stages_own_one_line_error_before_anything_is_written(tmp_path, capsys, tiny,
                                                                                    override, stage_argv):
    family = stage_argv[0]
    assert main(["demo", "--preset", "smoke", "--data", tiny, "--out", str(tmp_path / "demo"),
                 f"{family}.{override}"]) == 2
    demo_err = capsys.readouterr().err.strip()
    assert demo_err.count("\n") == 0 and demo_err.startswith("gensis: error: ")
    assert not (tmp_path / "demo").exists()
    argv = [a.format(tmp=tmp_path) for a in stage_argv] + ["--preset", "smoke", "--data", tiny, override]
    assert main(argv) == 2
    stage_err = capsys.readouterr().err.strip()
    # the same message as `gensis pretrain|eldm train|bank generate key=value`, naming where it came from
    assert demo_err.split(" (in ")[0] == stage_err.split(" (in ")[0]
    assert demo_err.endswith(f"(in the demo's {family}.* overrides)")


def test_overrides_enter_the_keys_of_their_stages_and_those_that_read_them(tmp_path, tiny):
    base = _plan(tmp_path / "a", tiny)
    assert set(base) == {"dino", "eldm-ae", "eldm", "eldm-figures", "eldm-eval", "bank", "gendino", "pixel"}

    def changed(*overrides):
        now = _plan(tmp_path / "b", tiny, overrides)
        assert set(now) == set(base)
        for name, (key, cmd, cfg) in now.items():
            if now[name][0] == base[name][0]:  # same key: same command (the override is not in it) ...
                assert cmd.replace("/b/", "/a/") == base[name][1]
        return {name for name in now if now[name][0] != base[name][0]}, now

    diff, now = changed("pretrain.optim.epochs=5")
    assert diff == {"dino", "pixel", "gendino", "eldm", "eldm-figures", "eldm-eval", "bank"}  # not the autoencoder
    assert all(now[n][2]["optim"]["epochs"] == 5 for n in ("dino", "pixel", "gendino"))
    assert "optim.epochs=5" in now["dino"][1] and "optim.epochs=5" in now["gendino"][1]
    diff, now = changed("eldm.optim.epochs=4")  # not the autoencoder either: it reads data.*, ae.*, train.*
    assert diff == {"eldm", "eldm-figures", "eldm-eval", "bank", "gendino"}
    assert now["eldm"][2]["optim"]["epochs"] == 4 and "optim.epochs=4" in now["eldm"][1]
    assert "optim.epochs=4" not in now["eldm-ae"][1]  # `eldm train-ae` would warn that it does not read it
    diff, now = changed("eldm.figures.rows=3")  # read by `eldm sample` only: the E-LDM is not retrained
    assert diff == {"eldm-figures"} and now["eldm-figures"][1].endswith("figures.rows=3")
    assert now["eldm-figures"][2] == ["figures.rows=3"]
    diff, now = changed("eldm.eval.n=8")
    assert diff == {"eldm-eval"}
    diff, now = changed("bank.gen.num_generative=2")
    assert diff == {"bank", "gendino"} and now["bank"][2]["gen"]["num_generative"] == 2
    diff, now = changed("bank.gen.alphas=[0.3]")  # Gen-DINO's disentanglement takes the bank's alphas
    assert diff == {"bank", "gendino"} and now["gendino"][2]["gen"]["alphas"] == [0.3]
    assert now["gendino"][1].endswith("gen.alphas=[0.3]") and now["pixel"][2]["gen"]["alphas"] == [0.5]
    diff, now = changed("pretrain.data.limit=40")  # the bank follows pretraining's images
    assert now["bank"][2]["data"]["limit"] == 40 and "bank" in diff


def test_an_earlier_demos_autoencoder_is_kept_under_its_former_key(tmp_path, tiny):
    """The autoencoder's key was the whole E-LDM config's (so eldm.optim.epochs=N trained it again); now it is that of
    the sections its training reads. A demo folder from before, with its autoencoder finished under the former key,
    keeps it, and the stages that read it keep theirs; any other recorded key is not taken for it."""
    from gensis.config import load_config
    from gensis.configs.added import without_added
    from gensis.data.sources import open_data
    from gensis.pipeline.runner import stage_key

    out = tmp_path / "demo"
    base = _plan(out, tiny)
    former = stage_key("eldm-ae", without_added("eldm", load_config("eldm", "demo", [])), open_data(tiny, "all").identity,
                       tiny)
    assert former != base["eldm-ae"][0]
    (out / "eldm-ae").mkdir(parents=True)
    (out / "eldm-ae" / "manifest.json").write_text('{"stage": "eldm-ae", "status": "done"}')
    for recorded, kept in ((former, True), ("0123456789abcdef", False)):
        (out / "stages.json").write_text(json.dumps({"eldm-ae": recorded}))
        now = _plan(out, tiny)
        assert (now["eldm-ae"][0] == former) is kept and (now["eldm-ae"][0] == base["eldm-ae"][0]) is not kept
        assert (now["eldm"][0] != base["eldm"][0]) is kept  # the E-LDM's key reads the autoencoder's
    (out / "eldm-ae" / "manifest.json").write_text('{"stage": "eldm-ae", "status": "running"}')
    (out / "stages.json").write_text(json.dumps({"eldm-ae": former}))
    assert _plan(out, tiny)["eldm-ae"][0] == base["eldm-ae"][0]  # an unfinished one is trained under the new key


def test_other_methods_get_the_pretrain_overrides_too(tmp_path, tiny):
    now = _plan(tmp_path, tiny, ["pretrain.optim.epochs=2"], methods=("dino", "simclr"))
    assert now["simclr"][2]["optim"]["epochs"] == 2 and now["simclr"][2]["method"] == "simclr"


def test_header_and_report_show_the_overrides(tmp_path, capsys, tiny):
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo"
    out.mkdir()
    (out / "results.json").write_text("{}")
    (out / "stages.json").write_text('{"dino": "0123456789abcdef", "_seconds": {}}')  # an earlier demo's folder
    assert main(["demo", "--preset", "smoke", "--data", tiny, "--out", str(out), "--stages", "report",
                 "pretrain.optim.epochs=5", "bank.gen.num_generative=2"]) == 0
    err = capsys.readouterr().err
    assert (f"gensis demo: preset smoke, data {tiny}, seed 0, methods dino; overrides: pretrain.optim.epochs=5 "
            f"bank.gen.num_generative=2") in err
    md = (out / "report.md").read_text()
    assert "Settings: `preset smoke" in md and "overrides: pretrain.optim.epochs=5 bank.gen.num_generative=2" in md
    assert "pretrain.optim.epochs=5" in (out / "report.html").read_text()


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "STAGE.key=value" in text and "pretrain.optim.epochs=5" in text


def test_seeds_summary_command_repeats_the_overrides():
    from types import SimpleNamespace

    from gensis.pipeline.seeds import seeds_markdown, summarize_seeds

    per_seed = {s: {"dino": {"label": "DINO", "knn": {"results": [{"k": 20, "top1": 50.0 + s}]}}} for s in (0, 1)}
    md = seeds_markdown(summarize_seeds(per_seed), SimpleNamespace(
        preset="smoke", data="D", out="OUT", methods=("dino", "simclr"), overrides=("pretrain.optim.epochs=5",)))
    assert "--seeds 0,1 --out OUT --methods dino,simclr pretrain.optim.epochs=5`" in md


def test_skip_bad_images_reaches_the_stages_that_read_the_same_data(tmp_path, tiny):
    """``pretrain.data.skip_bad_images=true``: the E-LDM (its autoencoder; figures and eval read its config) and
    the bank skip the unreadable image too (they stopped on the image the pretraining skipped)."""
    base = _plan(tmp_path / "a", tiny)
    now = _plan(tmp_path / "b", tiny, ["pretrain.data.skip_bad_images=true"])
    for name in ("dino", "eldm-ae", "eldm", "bank"):
        assert now[name][2]["data"]["skip_bad_images"] is True, name
        assert base[name][2]["data"]["skip_bad_images"] is False, name
    for name in ("eldm-ae", "eldm", "bank"):
        assert "data.skip_bad_images=true" in now[name][1], name
    assert all(now[n][0] != base[n][0] for n in ("eldm", "eldm-figures", "eldm-eval", "bank"))
