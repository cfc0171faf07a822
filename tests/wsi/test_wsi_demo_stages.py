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
    from gensis.rundir import held_locks, lock_folder
    from gensis.wsi.demo import _Stages

    runs = []

    def call(resume):
        runs.append(resume)
        lock_folder(tmp_path / "dino")
        if len(runs) == 1:
            raise UserError("no tissue")
        (tmp_path / "dino" / "manifest.json").write_text("{}")

    st = _Stages(tmp_path, debug=False)
    with pytest.raises(UserError) as e:
        st.run("dino", ["pretrain", "--out", "X"], "k", tmp_path / "dino" / "manifest.json", call, resumable=True)
    assert str(e.value).startswith("stage 'dino' failed: no tissue;") and "\n" not in str(e.value)
    assert (tmp_path / "dino").resolve() not in held_locks()
    _Stages(tmp_path, debug=True).run("dino", ["pretrain", "--out", "X"], "k", tmp_path / "dino" / "manifest.json",
                                      call, resumable=True)
    _Stages(tmp_path, debug=False).run("dino", ["pretrain", "--out", "X"], "k", tmp_path / "dino" / "manifest.json",
                                       call, resumable=True)
    assert runs == [False, True]
    err = capsys.readouterr().err
    assert "[dino] resuming: gensis pretrain --out X --resume --debug" in err and "[dino] up to date" in err


def test_results_table_names_the_folds_the_mil_preset_ran():
    from gensis.mil.metrics import METRICS
    from gensis.wsi.demo import format_results

    summary = {m: {"mean": 0.5, "std": 0.1} for m in METRICS}
    run = {"n_slides": 24, "mode": "kfold", "summary": summary}
    two = format_results({"dino": {**run, "splits": {"fold-0": {}, "fold-1": {}}}})
    five = format_results({"dino": {**run, "splits": {f"fold-{i}": {} for i in range(5)}}})
    assert two.startswith("ABMIL, 2-fold CV over 24 regions") and five.startswith("ABMIL, 5-fold CV over 24")
