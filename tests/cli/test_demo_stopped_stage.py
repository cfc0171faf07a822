"""A demo stage whose training stops (a non-finite loss, an input that cannot be read): its line says how to go
on with the demo (run it again with the same --out; other settings as the demo's overrides), never the
standalone command's --resume / another --out (``gensis.train.next_step``), and what it says holds."""

import json
import os

import pytest

from gensis.cli.main import main

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
# a few seconds: 64 images, one DINO stage in this process (--serial), 3 steps of 16 per epoch
TINY = ["--preset", "smoke", "--stages", "dino", "--serial", "--quiet", "--no-linear", "pretrain.optim.batch_size=16",
        "pretrain.optim.epochs=2", "pretrain.model.embed_dim=32", "pretrain.model.num_heads=2",
        "pretrain.model.depth=1", "pretrain.train.threads=1"]


@pytest.fixture
def poison(monkeypatch):
    """DINO's loss is NaN from epoch ``box["epoch"]`` on (None: never)."""
    from gensis.ssl.methods.dino import DINO

    original, box = DINO.loss, {"epoch": 1}

    def poisoned(self, s_out, t_out, step):
        loss, parts = original(self, s_out, t_out, step)
        bad = box["epoch"] is not None and step.epoch >= box["epoch"]
        return (loss * float("nan") if bad else loss), parts

    monkeypatch.setattr(DINO, "loss", poisoned)
    return box


def _error(capsys) -> str:
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("gensis: error:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_diverged_stage_with_a_checkpoint_says_run_the_demo_again(tmp_path, tiny, poison, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--data", tiny, "--out", str(out), *TINY]) == 2
    line = _error(capsys)
    assert line.startswith("gensis: error: stage 'dino' failed: pretrain: the loss or gradient norm is not finite "
                           "at epoch 1"), line
    assert "--resume" not in line and "another --out" not in line, line
    assert "(epoch 0) is untouched; the demo run again with the same --out continues it, with the same settings" in line
    assert "other settings (e.g. a lower pretrain.optim.lr or pretrain.optim.clip_grad) are a fresh start" in line
    assert "run the demo again to resume" not in line  # the general advice, replaced by the stage's own

    # what it says holds: the same --out, same settings, resumes the stage from its checkpoint ...
    poison["epoch"] = None  # (the cause was transient)
    assert main(["demo", "--data", tiny, "--out", str(out), *TINY]) == 0
    err = capsys.readouterr().err
    assert "[dino] resuming: gensis pretrain" in err and "--resume" in err  # the printed equivalent command
    assert json.loads((out / "dino" / "manifest.json").read_text())["status"] == "done"
    # ... and another setting, as the demo's override, redoes it from the start
    assert main(["demo", "--data", tiny, "--out", str(out), *TINY, "pretrain.optim.lr=0.0005"]) == 0
    err = capsys.readouterr().err
    assert "[dino] made with other settings: redoing" in err and "[dino] running: gensis pretrain" in err


def test_diverged_stage_without_a_checkpoint_names_the_demo_overrides(tmp_path, tiny, poison, capsys):
    poison["epoch"] = 0
    assert main(["demo", "--data", tiny, "--out", str(tmp_path / "demo"), *TINY, "pretrain.optim.clip_grad=null"]) == 2
    line = _error(capsys)
    assert line.endswith("(no checkpoint was written yet; run the demo again with other settings, e.g. a lower "
                         "pretrain.optim.lr or a value for pretrain.optim.clip_grad, now off (pretrain.* overrides of "
                         "the demo apply to every pretrain stage: the demo redoes those from the start, with the "
                         "stages that read them))"), line
    assert "--resume" not in line and "--out" not in line


def test_a_side_lane_stage_prints_the_demo_s_words_too(tmp_path, tiny, capsys):
    """A stage run beside the main chain is a ``gensis pretrain`` child process (its line printed by the child):
    the lane tells it that it runs inside the demo."""
    from gensis.errors import UserError
    from gensis.pipeline.runner import Pipeline, Stage

    pipe = Pipeline(tmp_path, side_threads=1)
    argv = ["pretrain", "--data", tiny, "--out", str(tmp_path / "pixel"), "--preset", "smoke", "optim.epochs=1",
            "optim.batch_size=16", "model.embed_dim=32", "model.num_heads=2", "model.depth=1", "optim.lr=1e30"]
    pipe.run(Stage("pixel", argv, "k", kind="pretrain", call=lambda resume: None, background=True))
    with pytest.raises(UserError, match="stage 'pixel' failed"):
        pipe.join()
    line = _error(capsys)
    assert "not finite" in line and "run the demo again with other settings, e.g. a lower pretrain.optim.lr" in line
    assert "--resume" not in line and "--out" not in line, line


def test_an_unreadable_input_s_line_in_both_terms():
    """The same facts (a checkpoint of epoch 0 left) as a command's line (unchanged: restore, then --resume) and
    as a demo stage's (restore, then the demo again with the same --out)."""
    from gensis.train.next_step import UNREADABLE, NextStep, attach, error_line

    step = NextStep("cannot read image x.png", UNREADABLE, "pretrain", "run/checkpoint.safetensors", 0, {})
    e = ValueError("cannot read image x.png")
    attach(e, step)
    assert str(e) == ("cannot read image x.png; to keep this run, restore that file as it was (removing or skipping "
                      "it changes the data: another --out), then rerun with --resume to continue from epoch 1 (the "
                      "checkpoint of epoch 0 is kept)")
    demo = error_line(e, demo=True)
    assert demo == ("cannot read image x.png; to keep this stage's progress, restore that file as it was, then run "
                    "the demo again with the same --out: it continues from epoch 1 (the checkpoint of epoch 0 is "
                    "kept); removing or skipping the file changes the data, and the demo then redoes the stage from "
                    "the start")
    # no checkpoint: the command's line is the error's own; the demo's says the stage starts again
    bare = NextStep("cannot read image x.png", UNREADABLE, "pretrain", None, None, {})
    assert bare.line() == "cannot read image x.png" and "--resume" not in bare.line(demo=True)
    assert error_line(ValueError("other"), demo=True) is None
