"""Pipeline stages: keyed by resolved config + inputs, and gensis removes only folders it provably wrote."""

import json
import os
import subprocess
import sys

import pytest

from gensis.errors import UserError
from gensis.pipeline.results import results_table, variants
from gensis.pipeline.runner import Pipeline, Stage, proves_kind, stage_key
from gensis.pipeline.table import Table


def _run_folder(path, stage):
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"stage": stage, "status": "done"}))
    (path / "teacher_backbone.safetensors").write_bytes(b"x")


def test_other_settings_remove_only_a_provable_run_folder(tmp_path):
    pipe = Pipeline(tmp_path)
    _run_folder(tmp_path / "dino", "pretrain")
    pipe._clear(Stage("dino", [], "k2", kind="pretrain"))
    assert not (tmp_path / "dino").exists()

    (tmp_path / "dino").mkdir()
    (tmp_path / "dino" / "my-notes.txt").write_text("notes")
    with pytest.raises(UserError) as e:
        pipe._clear(Stage("dino", [], "k2", kind="pretrain"))
    assert str(tmp_path / "dino") in str(e.value) and "\n" not in str(e.value)
    assert (tmp_path / "dino" / "my-notes.txt").read_text() == "notes"

    _run_folder(tmp_path / "eldm", "eldm-ae")  # a run of another stage kind is not proof either
    with pytest.raises(UserError, match="not a eldm folder"):
        pipe._clear(Stage("eldm", [], "k", kind="eldm"))
    assert (tmp_path / "eldm" / "manifest.json").is_file()

    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "mine.png").write_bytes(b"x")
    pipe._clear(Stage("figs", [], "k", kind=None))  # rewritten in place: nothing removed
    assert (tmp_path / "figs" / "mine.png").is_file()


def test_bank_header_proves_a_bank(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "bank.json").write_text(json.dumps({"format": "gensis-bank", "identity": "x"}))
    assert proves_kind(tmp_path / "b", "bank") and not proves_kind(tmp_path / "b", "pretrain")
    (tmp_path / "b" / "bank.json").write_text("{torn")
    assert not proves_kind(tmp_path / "b", "bank")


def test_stage_key_follows_the_resolved_config():
    from gensis.config import load_config

    a = stage_key("pretrain", load_config("pretrain", "smoke", ["train.seed=0"]), "data-id")
    assert a == stage_key("pretrain", load_config("pretrain", "smoke", ["train.seed=0"]), "data-id")
    assert a != stage_key("pretrain", load_config("pretrain", "smoke", ["train.seed=0", "optim.lr=0.002"]), "data-id")
    assert a != stage_key("pretrain", load_config("pretrain", "smoke", ["train.seed=0"]), "other-data")


def test_one_table_three_renderings():
    rows = {n: {"label": l, "knn": {"results": [{"k": 10, "top1": 50.0 + i}, {"k": 20, "top1": 60.0 + i}]},
                "linear": {"top1": 40.0 + i}} for i, (n, l) in enumerate([("gendino", "Gen-DINO"), ("dino", "DINO"),
                                                                          ("pixels", "raw pixels")])}
    t = results_table(rows)
    assert isinstance(t, Table) and t.columns == ["DINO", "Gen-DINO", "raw pixels"]  # paper order
    assert [r[0] for r in t.rows] == ["10-NN", "20-NN", "linear probe"]
    assert t.rows[1][1] == ["61.0", "60.0", "62.0"]
    assert "| 20-NN | 61.0 | 60.0 | 62.0 |" in t.markdown() and "<td>61.0</td>" in t.html()
    assert "61.0" in t.text().splitlines()[3]


def test_demo_table_columns_are_as_wide_as_their_header():
    """The demo's five columns: each as wide as its own header (one width for all, the longest header's, made
    the terminal table 129 characters wide, wrapping on a 100-column terminal; README shows it compact)."""
    names = [("dino", "DINO"), ("pixel", "DINO w/ pixel disent."), ("gendino", "Gen-DINO"), ("pixels", "raw pixels"),
             ("random", "random-init ViT")]
    rows = {n: {"label": l, "knn": {"results": [{"k": 10, "top1": 50.0 + i}, {"k": 20, "top1": 60.0 + i}]},
                "linear": {"top1": 40.0 + i}} for i, (n, l) in enumerate(names)}
    lines = results_table(rows).text().splitlines()
    assert max(map(len, lines)) <= 90
    header, row = lines[1], lines[3]
    for _, label in names:  # each cell ends where its header ends
        end = header.index(label) + len(label)
        assert row[end - 4:end].strip() and (end == len(row) or row[end] == " ")
    assert row.split() == ["20-NN", "60.0", "61.0", "62.0", "63.0", "64.0"]


def test_variants_of_a_method():
    assert [v.label for v in variants("dino")] == ["DINO", "DINO w/ pixel disent.", "Gen-DINO"]
    assert [v.name for v in variants("dino")] == ["dino", "pixel", "gendino"]
    assert [v.label for v in variants("ibot")] == ["iBOT", "iBOT w/ pixel disent.", "Gen-iBOT"]


def test_demo_refuses_to_delete_a_folder_it_did_not_write(tmp_path):
    """Issue 10.1 as reported: notes in OUT/dino must survive `gensis demo --stages dino`: OUT is not a demo
    folder (refused whole, tests/cli/test_demo_out.py); in a demo folder, OUT/dino is refused by the stage."""
    out = tmp_path / "OUT"
    (out / "dino").mkdir(parents=True)
    (out / "dino" / "my-notes.txt").write_text("notes")
    for where in (out, out / "dino"):
        r = subprocess.run([sys.executable, "-m", "gensis.cli.main", "demo", "--preset", "smoke", "--out", str(out),
                            "--stages", "dino", "--quiet"], capture_output=True, text=True,
                           env={**os.environ, "GENSIS_NO_PROGRESS": "1"}, timeout=300)
        assert r.returncode == 2, r.stderr[-2000:]
        err = [l for l in r.stderr.splitlines() if l.startswith("gensis: error")]
        assert len(err) == 1 and f"{where} " in err[0] and "Traceback" not in r.stderr
        assert (out / "dino" / "my-notes.txt").read_text() == "notes"
        (out / "stages.json").write_text('{"dino": "0123456789abcdef", "_seconds": {}}')  # now an earlier demo's


def test_methods_flag():
    from gensis.pipeline.demo import parse_methods

    assert parse_methods("dino") == ("dino",) and parse_methods("dino, dino") == ("dino",)
    with pytest.raises(UserError, match="empty"):
        parse_methods(" , ")
    with pytest.raises(UserError, match="nosuch"):
        parse_methods("dino,nosuch")


def test_a_stage_is_a_library_call_one_line_error_resumed_locks_released(tmp_path, capsys):
    from gensis.rundir import held_locks, lock_folder

    pipe = Pipeline(tmp_path)
    runs = []

    def call(resume):
        runs.append(resume)
        lock_folder(tmp_path / "s")  # as a trainer locks its run folder
        if len(runs) == 1:
            raise UserError("the data is gone")
        (tmp_path / "s" / "manifest.json").write_text(json.dumps({"stage": "pretrain", "status": "done"}))

    st = Stage("s", ["pretrain", "--out", "X"], "k1", kind="pretrain", call=call)
    with pytest.raises(UserError) as e:
        pipe.run(st)
    assert str(e.value).startswith("stage 's' failed: the data is gone;") and "\n" not in str(e.value)
    assert (tmp_path / "s").resolve() not in held_locks()  # free again, as after a separate command
    assert Pipeline(tmp_path).run(st) == tmp_path / "s" and runs == [False, True]  # a new demo run resumes
    Pipeline(tmp_path).run(st)
    assert runs == [False, True]  # finished with the same key: skipped
    err = capsys.readouterr().err
    assert "[s] running: gensis pretrain --out X" in err and "[s] resuming: gensis pretrain --out X" in err
    assert "[s] up to date, skipped" in err
    with pytest.raises(ValueError, match="nothing to call"):
        Pipeline(tmp_path).run(Stage("t", [], "k"))


def test_the_printed_stage_command_can_be_pasted_when_paths_have_spaces(tmp_path, capsys):
    """`gensis wsi demo --out "My slides"` printed `[dino] running: gensis pretrain --data tiles:My slides/tiles
    ...`: pasted into a shell, that is other arguments. The line now quotes what a shell would split."""
    import shlex

    out = tmp_path / "My slides é"
    argv = ["pretrain", "--data", f"tiles:{out / 'tiles'}", "--out", str(out / "dino")]

    def call(resume):
        (out / "dino").mkdir(parents=True, exist_ok=True)
        (out / "dino" / "manifest.json").write_text(json.dumps({"stage": "pretrain", "status": "done"}))

    Pipeline(out).run(Stage("dino", argv, "k1", kind="pretrain", call=call))
    line = next(ln for ln in capsys.readouterr().err.splitlines() if "[dino] running:" in ln)
    assert shlex.split(line.split("running: ", 1)[1]) == ["gensis", *argv]
