"""``gensis wsi demo`` (= ``gensis demo --preset wsi``) with pretrain./eldm./bank./mil. overrides: checked before
anything runs, part of the keys of the stages they change (none given: the keys of before)."""

import json
from unittest import mock

import pytest

from gensis.cli.main import main
from gensis.errors import UserError


def _plan(tmp_path, overrides=(), mil_preset="base", preset="histo-cpu"):
    """{stage: (key, printed command)} of the slide demo, nothing run (stages and region cutting replaced)."""
    from gensis.pipeline.runner import Pipeline
    from gensis.wsi import demo

    seen = {}

    def record(self, stage):
        seen[stage.name] = (stage.key, " ".join(stage.argv))
        self.state[stage.name] = stage.key  # as Pipeline.run records it: the folder stays the slide demo's
        self._save()
        if stage.name.startswith("mil-"):
            (self.out / stage.name).mkdir(parents=True, exist_ok=True)
            (self.out / stage.name / "metrics.json").write_text(json.dumps({"summary": {}, "n_slides": 0}))
        return self.out / stage.name

    out = tmp_path / "wsi"
    slide = tmp_path / "slide.svs"
    if not slide.exists():
        slide.write_bytes(b"not a real slide: nothing reads it here")
    with mock.patch.object(Pipeline, "run", record), mock.patch.object(demo, "region_bags", lambda *a, **k: []), \
            mock.patch.object(demo, "format_results", lambda *a: ""), \
            mock.patch.object(demo, "column_evidence", lambda *a: {}):
        demo.run_wsi_demo(out, slide=slide, quiet=True, overrides=tuple(overrides), mil_preset=mil_preset,
                          preset=preset)
    return seen


def _edited(family, preset, edit):
    """``gensis.config._preset_text`` that serves ``family``'s ``preset`` file with ``edit`` applied to its data
    (as if the user edited that YAML file)."""
    import yaml

    from gensis import config

    real = config._preset_text

    def text(name, fam):
        t = real(name, fam)
        if (name, fam) != (preset, family):
            return t
        data = yaml.safe_load(t) or {}
        edit(data)
        return yaml.safe_dump(data)
    return mock.patch.object(config, "_preset_text", text)


ALL = {"tiles", "dino", "eldm", "bank", "gendino", "embed-dino", "embed-gendino", "embed-random", "mil-dino",
       "mil-gendino", "mil-random"}


@pytest.mark.parametrize("family,preset,edit,changed", [
    # a value the bank reads: the bank and what reads it (Gen-DINO, its embeddings and its MIL run)
    ("bank", "histo-cpu", lambda d: d["gen"].update(guidance=2.5),
     {"bank", "gendino", "embed-gendino", "mil-gendino"}),
    # pretraining: both encoders, the E-LDM conditioned on DINO, the bank, every column (random init is DINO's)
    ("pretrain", "histo-cpu", lambda d: d.setdefault("optim", {}).update(epochs=7), ALL - {"tiles"}),
    # a base.yaml value the MIL stages read
    ("mil", "base", lambda d: d["cv"].update(folds=4), {"mil-dino", "mil-gendino", "mil-random"}),
])
def test_editing_a_preset_redoes_exactly_the_stages_that_read_it(tmp_path, family, preset, edit, changed):
    """Stages are keyed by their resolved config, not the preset's name: an edited preset file changes the keys
    of the stages that read the edited value and of the stages that read theirs, and no other."""
    base = _plan(tmp_path)
    assert set(base) == ALL | ({"eldm-ae"} if "eldm-ae" in base else set())
    with _edited(family, preset, edit):
        now = _plan(tmp_path)
    assert {n for n in base if now[n][0] != base[n][0]} == changed
    assert now["dino"][1] == base["dino"][1]  # same printed commands: the preset is still named, not inlined


def test_an_edited_eldm_preset_redoes_the_eldm_and_what_reads_it(tmp_path):
    base = _plan(tmp_path)
    with _edited("eldm", "histo-cpu", lambda d: d.setdefault("optim", {}).update(epochs=3)):
        now = _plan(tmp_path)
    diff = {n for n in base if now[n][0] != base[n][0]}
    assert {"eldm", "bank", "gendino", "embed-gendino", "mil-gendino"} <= diff
    assert not diff & {"tiles", "dino", "embed-dino", "mil-dino", "embed-random", "mil-random"}


ELDM_ON = {"eldm", "bank", "gendino", "embed-gendino", "mil-gendino"}  # the E-LDM and what reads it


@pytest.mark.parametrize("edit,changed", [
    # sections neither E-LDM stage reads (their Tasks' resume_ignore): nothing is redone
    (lambda d: d.setdefault("figures", {}).update(rows=3), set()),
    (lambda d: d.setdefault("eval", {}).update(n=50), set()),
    # the E-LDM's own sections: not the autoencoder
    (lambda d: d.setdefault("unet", {}).update(attention_head_dim=4), ELDM_ON),
    (lambda d: d.setdefault("sample", {}).update(guidance=2.0), ELDM_ON),
    # the autoencoder's: it, and the E-LDM trained on its latents
    (lambda d: d["ae"]["optim"].update(epochs=2), ELDM_ON | {"eldm-ae"}),
])
def test_eldm_stages_are_keyed_by_only_the_sections_they_read(tmp_path, edit, changed):
    """A figures.* or eval.* setting (read by `gensis eldm sample|eval`, not by training) redid the E-LDM and the
    autoencoder, and everything after them."""
    base = _plan(tmp_path)
    assert "eldm-ae" in base  # histo-cpu denoises VQ latents
    with _edited("eldm", "histo-cpu", edit):
        now = _plan(tmp_path)
    assert {n for n in base if now[n][0] != base[n][0]} == changed


def test_another_slide_file_redoes_everything(tmp_path):
    base = _plan(tmp_path)
    (tmp_path / "slide.svs").write_bytes(b"another slide, another size")
    now = _plan(tmp_path)
    assert all(now[n][0] != base[n][0] for n in base)


def test_keys_leave_out_added_keys_at_their_old_value(tmp_path):
    """``gensis.configs.added``: a key registered as added later, at its old value, is not hashed (upgrading
    gensis keeps a finished slide demo up to date); another value redoes the E-LDM and what reads it."""
    from gensis.configs.added import ADDED

    base = _plan(tmp_path)
    with mock.patch.dict(ADDED["eldm"]):  # as if cond.tokens were hashed like any key
        del ADDED["eldm"]["cond.tokens"]
        hashed = _plan(tmp_path)
    # not the autoencoder: it does not read cond.* (AutoencoderTask.resume_ignore)
    assert {n for n in base if hashed[n][0] != base[n][0]} == {"eldm", "bank", "gendino", "embed-gendino",
                                                                "mil-gendino"}
    diff = {n for n, v in _plan(tmp_path, ["eldm.cond.tokens=2"]).items() if v[0] != base[n][0]}
    assert "eldm" in diff and "dino" not in diff


def test_overrides_change_the_keys_of_their_stages_and_what_reads_them(tmp_path):
    base = _plan(tmp_path)

    def changed(*ov):
        now = _plan(tmp_path, ov)
        return {n for n in now if now[n][0] != base[n][0]}, now

    diff, now = changed("pretrain.optim.epochs=1")
    assert {"dino", "eldm", "bank", "gendino", "embed-dino", "embed-gendino", "mil-dino", "embed-random"} <= diff
    assert "tiles" not in diff and "optim.epochs=1" in now["dino"][1]
    diff, now = changed("mil.cv.folds=3")
    assert diff == {"mil-dino", "mil-gendino", "mil-random"} and "cv.folds=3" in now["mil-dino"][1]
    diff, now = changed("bank.gen.num_generative=2")
    assert diff == {"bank", "gendino", "embed-gendino", "mil-gendino"}
    diff, now = changed("pretrain.data.limit=100")  # the bank follows pretraining's images
    assert "data.limit=100" in now["bank"][1]


@pytest.mark.parametrize("item,msg", [("pretrain.optim.epoks=1", "unknown config key 'optim.epoks'"),
                                      ("mil.cv.folds=x", "cv.folds=x: must be"),
                                      ("mil.cv.seed=2", "use --seed"),
                                      ("eval.n=3", "valid prefixes: pretrain, eldm, bank, mil"),
                                      # no stage of the slide demo reads them (no E-LDM evaluation or figures stage)
                                      ("eldm.eval.n=50", r"'eldm.eval.n=50': nothing in this demo reads eldm.eval.\*: "
                                                         "the slide demo has no E-LDM evaluation stage"),
                                      ("eldm.figures.rows=3", r"nothing in this demo reads eldm.figures.\*: the slide "
                                                              "demo has no E-LDM figures stage"),
                                      ("eldm.eval={n: 5}", r"nothing in this demo reads eldm.eval.\*")])
def test_bad_overrides_stop_before_anything_runs(tmp_path, item, msg):
    with pytest.raises(UserError, match=msg):
        _plan(tmp_path, [item])
    assert not (tmp_path / "wsi").exists()


def test_both_commands_take_overrides(tmp_path, capsys):
    for argv in (["wsi", "demo"], ["demo", "--preset", "wsi"]):
        assert main([*argv, "--out", str(tmp_path / "w"), "mil.cv.foldz=3"]) == 2
        assert "unknown config key 'cv.foldz'" in capsys.readouterr().err
        assert main([*argv, "--out", str(tmp_path / "w"), "eldm.figures.rows=3"]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "nothing in this demo reads eldm.figures.*" in err
        assert not (tmp_path / "w").exists()


def test_a_large_slide_trains_on_a_bounded_random_subset_and_says_so(tmp_path, capsys):
    """`gensis wsi demo --slide BIG.svs` trained on every tile of the slide (a 40x resection slide: hundreds of
    thousands, days on a CPU). Above MAX_TRAIN_TILES tissue tiles, the training stages read a random
    MAX_TRAIN_TILES (the bank the same tiles as pretraining), printed in their command lines; a data.limit the
    user gives wins. The default slide's keys are unchanged (test above: no overrides, the keys of before)."""
    from gensis.wsi import demo

    small = _plan(tmp_path)

    def tiled(n):
        return mock.patch.object(demo, "_tile_count", lambda *a: n)

    with tiled(demo.MAX_TRAIN_TILES):
        assert _plan(tmp_path) == small
    capsys.readouterr()
    with tiled(10 * demo.MAX_TRAIN_TILES):
        big = _plan(tmp_path)
    err = capsys.readouterr().err
    assert f"has {10 * demo.MAX_TRAIN_TILES:,} tissue tiles" in err and f"at most {demo.MAX_REGIONS} random regions" in err
    limit = f"data.limit={demo.MAX_TRAIN_TILES}"
    for stage in ("dino", "eldm", "bank", "gendino"):
        assert limit in big[stage][1] and big[stage][0] != small[stage][0], stage
    with tiled(10 * demo.MAX_TRAIN_TILES):
        mine = _plan(tmp_path, overrides=["pretrain.data.limit=3000"])
    assert "data.limit=3000" in mine["dino"][1] and limit not in mine["dino"][1] and limit in mine["eldm"][1]
    # a preset's own smaller limit (smoke: 512 / 256) is kept, never raised to the cap
    with tiled(10 * demo.MAX_TRAIN_TILES):
        smoke = _plan(tmp_path, preset="smoke")
    assert not any("data.limit" in cmd for _, cmd in smoke.values())
