"""``gensis wsi demo`` (= ``gensis demo --preset wsi``) with pretrain./eldm./bank./mil. overrides: checked before
anything runs, part of the keys of the stages they change (none given: the keys of before)."""

import json
from unittest import mock

import pytest

from gensis.cli.main import main
from gensis.errors import UserError


def _plan(tmp_path, overrides=()):
    """{stage: (key, printed command)} of the slide demo, nothing run (stages and region cutting replaced)."""
    from gensis.wsi import demo

    seen = {}

    def record(self, name, argv, key, done, call, resumable=False):
        seen[name] = (key, " ".join(argv))
        if name.startswith("mil-"):
            (self.out / name).mkdir(parents=True, exist_ok=True)
            (self.out / name / "metrics.json").write_text(json.dumps({"summary": {}, "n_slides": 0}))

    out = tmp_path / "wsi"
    with mock.patch.object(demo._Stages, "run", record), mock.patch.object(demo, "region_bags", lambda *a: []), \
            mock.patch.object(demo, "format_results", lambda *a: ""), \
            mock.patch.object(demo, "column_evidence", lambda *a: {}):
        demo.run_wsi_demo(out, slide=tmp_path / "slide.svs", quiet=True, overrides=tuple(overrides))
    return seen


def test_keys_without_overrides_are_those_of_before(tmp_path):
    """The keys as the slide demo computed them before overrides existed (its _key of the same parts)."""
    from gensis.wsi.demo import TILE_ARGS, _key

    seen = _plan(tmp_path)
    k_tiles = _key("tiles", str((tmp_path / "slide.svs").resolve()), TILE_ARGS)
    k_dino = _key("dino", k_tiles, "histo-cpu", "0")
    assert seen["dino"][0] == k_dino
    k_ae = _key("ae", k_tiles, "histo-cpu")
    k_eldm = _key("eldm", k_dino, k_ae, "histo-cpu", "0")
    assert seen["eldm"][0] == k_eldm
    assert seen["bank"][0] == _key("bank", k_eldm, "histo-cpu", "0")


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
                                      ("eval.n=3", "valid prefixes: pretrain, eldm, bank, mil")])
def test_bad_overrides_stop_before_anything_runs(tmp_path, item, msg):
    with pytest.raises(UserError, match=msg):
        _plan(tmp_path, [item])
    assert not (tmp_path / "wsi").exists()


def test_both_commands_take_overrides(tmp_path, capsys):
    for argv in (["wsi", "demo"], ["demo", "--preset", "wsi"]):
        assert main([*argv, "--out", str(tmp_path / "w"), "mil.cv.foldz=3"]) == 2
        assert "unknown config key 'cv.foldz'" in capsys.readouterr().err
