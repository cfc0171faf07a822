"""The slide demo runs its stages as library calls: the tiler gets what the printed `gensis wsi tile` line says,
a stage's error is one line naming it, and a finished stage is skipped."""

import pytest

from gensis.errors import UserError


def test_tile_settings_are_those_of_the_printed_command_line():
    from gensis.cli.main import build_parser
    from gensis.wsi.demo import TILE_ARGS, TILE_SETTINGS
    from gensis.wsi.tiler import tile_settings

    args = build_parser().parse_args(["wsi", "tile", "slide.svs", "--out", "T", *TILE_ARGS])
    from_cli = tile_settings(args.mag, args.mpp, args.tile_size, args.overlap, args.min_tissue, args.fill_holes,
                             args.no_tissue, args.thumb_size, args.backend)
    assert tile_settings(**TILE_SETTINGS) == from_cli


def test_stage_error_is_one_line_then_resumed_then_skipped(tmp_path, capsys):
    from gensis.pipeline.runner import Pipeline, Stage
    from gensis.rundir import held_locks, lock_folder

    runs = []

    def call(resume):
        runs.append(resume)
        lock_folder(tmp_path / "dino")
        if len(runs) == 1:
            raise UserError("no tissue")
        (tmp_path / "dino" / "manifest.json").write_text("{}")

    def stage():
        return Stage("dino", ["pretrain", "--out", "X", "--debug"], "k", kind="pretrain", call=call)

    with pytest.raises(UserError) as e:
        Pipeline(tmp_path).run(stage())
    assert str(e.value).startswith("stage 'dino' failed: no tissue;") and "\n" not in str(e.value)
    assert (tmp_path / "dino").resolve() not in held_locks()
    Pipeline(tmp_path).run(stage())
    Pipeline(tmp_path).run(stage())
    assert runs == [False, True]
    err = capsys.readouterr().err
    assert "[dino] resuming: gensis pretrain --out X --debug --resume" in err and "[dino] up to date" in err


class _Fake:
    """Stand-ins for the stages' library calls: each writes what proves its folder finished and records
    (stage, resume); ``fail`` names a stage that stops half-way once (a killed or failed run)."""

    def __init__(self, fail=None):
        self.calls, self.fail = [], fail

    def make(self, name, out, files):
        def call(resume):
            self.calls.append((name, resume))
            out.mkdir(parents=True, exist_ok=True)
            (out / "partial").write_text("")
            if name == self.fail:
                self.fail = None
                raise UserError("killed")
            for f, text in files.items():
                (out / f).parent.mkdir(parents=True, exist_ok=True)
                (out / f).write_text(text)
        return call

    def patches(self):
        import json
        from unittest import mock

        from gensis.pipeline import calls
        from gensis.wsi import demo

        def manifest(kind):
            return {"manifest.json": json.dumps({"stage": kind})}

        def done(kind):  # what gensis.pipeline.runner.mark_done writes
            return {demo.DONE: json.dumps({"status": "done", "stage": kind})}
        return [mock.patch.object(calls, "pretrain", lambda cfg, data, out, **kw: self.make(out.name, out,
                                                                                            manifest("pretrain"))),
                mock.patch.object(calls, "autoencoder", lambda cfg, data, out: self.make(out.name, out,
                                                                                       manifest("eldm-ae"))),
                mock.patch.object(calls, "eldm", lambda cfg, enc, data, out, ae: self.make(out.name, out,
                                                                                         manifest("eldm"))),
                mock.patch.object(calls, "bank", lambda cfg, eldm, data, out, quiet: self.make(
                    out.name, out, {"bank.json": json.dumps({"format": "gensis-bank"})})),
                mock.patch.object(demo, "_tile",
                                  lambda slide, out, quiet, slide_mpp=None: self.make(out.name, out, done("tiles"))),
                mock.patch.object(demo, "_embed", lambda spec, tiles, feats, quiet, like: self.make(
                    feats.name, feats, done("features"))),
                mock.patch.object(demo, "_mil", lambda feats, labels, out, cfg, quiet: self.make(
                    out.name, out, {"metrics.json": json.dumps({"summary": {}, "n_slides": 6}),
                                    "mil.json": json.dumps({"classes": [], "splits": {}})})),
                mock.patch.object(demo, "region_bags", lambda *a, **k: []),
                mock.patch.object(demo, "format_results", lambda *a: ""),
                mock.patch.object(demo, "column_evidence", lambda *a: {})]


def _run(tmp_path, fake, **kw):
    from contextlib import ExitStack

    from gensis.wsi.demo import run_wsi_demo

    slide = tmp_path / "slide.svs"
    if not slide.exists():
        slide.write_bytes(b"a slide nothing reads here")
    with ExitStack() as stack:
        for p in fake.patches():
            stack.enter_context(p)
        run_wsi_demo(tmp_path / "out", slide=slide, quiet=True, **kw)
    return fake.calls


def test_same_command_twice_redoes_nothing(tmp_path, capsys):
    first = _run(tmp_path, _Fake())
    assert {n for n, _ in first} >= {"tiles", "dino", "eldm", "bank", "gendino", "embed-random", "mil-random"}
    capsys.readouterr()
    assert _run(tmp_path, _Fake()) == []
    err = capsys.readouterr().err
    assert all(f"[{n}] up to date" in err for n, _ in first)


def test_an_interrupted_stage_resumes_and_only_it_and_what_follows_run_again(tmp_path, capsys):
    with pytest.raises(UserError, match="stage 'eldm' failed: killed"):
        _run(tmp_path, _Fake(fail="eldm"))
    capsys.readouterr()
    again = _run(tmp_path, _Fake())
    assert again[0] == ("eldm", True) and not {"tiles", "dino"} & {n for n, _ in again}
    assert ("bank", False) in again and ("gendino", False) in again
    assert "[eldm] resuming: gensis eldm train" in capsys.readouterr().err


def test_other_settings_redo_a_stage_and_remove_only_what_gensis_wrote(tmp_path):
    _run(tmp_path, _Fake())
    (tmp_path / "out" / "mil-dino" / "fold-9.json").write_text("{}")  # a file of the run made with other settings
    calls = _run(tmp_path, _Fake(), overrides=("mil.cv.folds=3",))
    assert {n for n, _ in calls} == {"mil-dino", "mil-gendino", "mil-random"}
    assert not (tmp_path / "out" / "mil-dino" / "fold-9.json").exists()  # the proven MIL folder was replaced
    (tmp_path / "out" / "mil-dino" / "mil.json").unlink()  # no longer provably a MIL run of the demo
    (tmp_path / "out" / "mil-dino" / "mine.txt").write_text("a user's file")
    with pytest.raises(UserError, match="mil-dino exists but is not a mil folder this demo wrote"):
        _run(tmp_path, _Fake(), overrides=("mil.cv.folds=4",))
    assert (tmp_path / "out" / "mil-dino" / "mine.txt").is_file()


def test_a_folder_made_with_the_old_keys_redoes_its_stages_once(tmp_path):
    """stages.json of before the shared runner ({stage: {key, done}}): every stage is redone once, then kept."""
    import json

    first = _run(tmp_path, _Fake())
    state = tmp_path / "out" / "stages.json"
    old = {n: {"key": "0123456789ab", "done": True, "seconds": 1.0} for n, _ in first}
    state.write_text(json.dumps(old))
    assert sorted(_run(tmp_path, _Fake())) == sorted((n, False) for n, _ in first)
    assert _run(tmp_path, _Fake()) == []


def test_results_table_names_the_folds_the_mil_preset_ran():
    from gensis.mil.metrics import METRICS
    from gensis.wsi.demo import format_results

    summary = {m: {"mean": 0.5, "std": 0.1} for m in METRICS}
    run = {"n_slides": 24, "mode": "kfold", "summary": summary}
    two = format_results({"dino": {**run, "splits": {"fold-0": {}, "fold-1": {}}}})
    five = format_results({"dino": {**run, "splits": {f"fold-{i}": {} for i in range(5)}}})
    assert two.startswith("ABMIL, 2-fold CV over 24 regions") and five.startswith("ABMIL, 5-fold CV over 24")


def test_what_proves_a_features_or_tiles_folder_is_gensis_output(tmp_path):
    """Bags that name their encoder (and a killed write's temporary file) prove an embed folder; a user's file
    beside them does not; tiles are proven by tiling.json; a mark_done record proves either."""
    import numpy as np

    pytest.importorskip("h5py")
    from gensis.mil.bags import write_bag
    from gensis.pipeline.runner import mark_done, proves_kind
    from gensis.rundir import TMP_SUFFIX

    feats = tmp_path / "embed-dino"
    feats.mkdir()
    assert not proves_kind(feats, "features")
    write_bag(feats / "s1.h5", np.zeros((2, 4), np.float32), np.zeros((2, 2), np.int64),
              {"slide_id": "s1", "encoder_identity": "abc"})
    (feats / f".s2.h5.123-abcdef01{TMP_SUFFIX}").write_bytes(b"")  # rundir's temporary name of s2.h5
    assert proves_kind(feats, "features") and not proves_kind(feats, "tiles")
    (feats / f"mine{TMP_SUFFIX}").write_text("mine")  # a user's file that merely ends like a temporary one
    assert not proves_kind(feats, "features")
    (feats / f"mine{TMP_SUFFIX}").unlink()
    (feats / "notes.txt").write_text("mine")
    assert not proves_kind(feats, "features")
    mark_done(feats, "features")
    assert proves_kind(feats, "features") and not proves_kind(feats, "mil")
    tiles = tmp_path / "tiles"
    (tiles / "10x_32px_0px_overlap").mkdir(parents=True)
    (tiles / "10x_32px_0px_overlap" / "tiling.json").write_text('{"settings": {}, "slides": {}}')
    assert proves_kind(tiles, "tiles") and not proves_kind(tiles, "features")


def test_wsi_demo_takes_slide_mpp_for_a_slide_without_one(tmp_path, capsys, monkeypatch):
    """`gensis wsi demo --slide S` with a slide lacking resolution metadata failed with 'give it with --slide-mpp
    MPP', an option the demo did not have. Now --slide-mpp is passed to its tiles stage (and printed there)."""
    pytest.importorskip("openslide")
    from wsi_slides import make_svs, slide_image

    import gensis.wsi.demo as demo
    from gensis.cli.main import main

    slide = make_svs(tmp_path / "nompp.svs", slide_image(512, 384, [(64, 64, 320, 256)]), mpp=None,
                     downsamples=(1, 2))

    def stop(folder):
        raise UserError("stopped after the tiles stage")

    monkeypatch.setattr(demo, "_tile_count", stop)
    out = tmp_path / "D"
    capsys.readouterr()
    assert main(["wsi", "demo", "--slide", str(slide), "--slide-mpp", "0.5", "--out", str(out), "--preset", "smoke",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "stopped after the tiles stage" in err and "--slide-mpp 0.5" in err, err
    assert list(out.glob("tiles/*/patches/nompp.h5"))
