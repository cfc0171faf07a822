"""The demo's side lane (``gensis.pipeline.lanes``): background stages run as ``gensis`` child processes beside
the main stages, with the pipeline's own keys, skipping and one-line errors."""

import json
import os

import pytest
import torch

from gensis.errors import UserError
from gensis.pipeline.lanes import side_threads
from gensis.pipeline.runner import Pipeline, Stage

TINY = ["--data", "builtin:animal-mnist", "--preset", "smoke", "data.limit=64", "optim.epochs=1",
        "optim.batch_size=32", "train.log_every=1"]


def _never(resume):  # a side-lane stage runs its argv in a child process, never its in-process call
    raise AssertionError("called in this process")


def _done_call(path, seen, key):
    def call(resume):
        m = path.parent / "side" / "manifest.json"
        seen[key] = (torch.get_num_threads(), m.is_file() and json.loads(m.read_text())["status"], os.getpid())
        path.mkdir()
        (path / "manifest.json").write_text(json.dumps({"stage": "pretrain", "status": "done"}))
    return call


def test_side_stage_runs_in_a_child_and_the_main_stage_waits_for_it(tmp_path, capsys):
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pipe = Pipeline(tmp_path, side_threads=1)
        side = Stage("side", ["pretrain", "--out", str(tmp_path / "side"), *TINY], "k1", kind="pretrain",
                     call=_never, background=True)
        seen = {}
        assert pipe.run(side) == tmp_path / "side"  # returns at once
        # a main stage that does not read it runs meanwhile, with the threads the side lane leaves
        pipe.run(Stage("m1", [], "k2", kind="pretrain", call=_done_call(tmp_path / "m1", seen, "m1")))
        # one that reads it waits for it, and gets every thread back
        pipe.run(Stage("m2", [], "k3", kind="pretrain", call=_done_call(tmp_path / "m2", seen, "m2"),
                       after=("side",)))
        pipe.join()
        assert seen == {"m1": (1, False, os.getpid()), "m2": (2, "done", os.getpid())}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)
    state = json.loads((tmp_path / "stages.json").read_text())
    assert state["side"] == "k1" and state["m2"] == "k3"
    assert state["_cpu_seconds"]["side"] > 0 and "m2" in state["_seconds"]  # the child's own CPU time
    err = capsys.readouterr().err
    assert f"[side] running (side lane): gensis pretrain --out {tmp_path / 'side'}" in err
    # a second pass: up to date, nothing runs (in the side lane either)
    again = Pipeline(tmp_path, side_threads=1)
    again.run(side)
    again.join()
    assert "[side] up to date, skipped" in capsys.readouterr().err


def test_a_training_stage_keeps_the_lanes_share_once_the_side_lane_is_idle(tmp_path):
    """``Stage.lane_threads``: the demo's DINO, E-LDM and Gen-X keep T − t threads (and the trainer's helper thread
    then uses the free core) even when they start after the side lane is done; other stages get every thread."""
    from gensis.device import apply_thread_share

    def call(name, seen):
        inner = _done_call(tmp_path / name, seen, name)

        def run(resume):
            apply_thread_share()  # what a training loop does at each metrics row
            inner(resume)
        return run

    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pipe = Pipeline(tmp_path, side_threads=1)
        pipe.run(Stage("side", ["pretrain", "--out", str(tmp_path / "side"), *TINY], "k1", kind="pretrain",
                       call=_never, background=True))
        seen = {}
        pipe.run(Stage("train", [], "k2", kind="pretrain", call=call("train", seen), after=("side",),
                       lane_threads=True))
        pipe.run(Stage("bank", [], "k3", kind="pretrain", call=call("bank", seen), after=("side",)))
        pipe.run(Stage("train2", [], "k4", kind="pretrain", call=call("train2", seen), lane_threads=True))
        pipe.join()
        assert {k: v[:2] for k, v in seen.items()} == {"train": (1, "done"), "bank": (2, "done"),
                                                        "train2": (1, "done")}
        assert torch.get_num_threads() == 2  # every thread back after the join
    finally:
        torch.set_num_threads(n)


def test_a_failed_side_stage_stops_the_demo_with_one_line(tmp_path):
    pipe = Pipeline(tmp_path, side_threads=1)
    pipe.run(Stage("bad", ["pretrain", "--out", str(tmp_path / "bad"), *TINY, "optim.epochs=0"], "k", kind="pretrain",
                   call=_never, background=True))
    with pytest.raises(UserError) as e:
        pipe.join()
    msg = str(e.value)
    assert msg.startswith("stage 'bad' failed") and "\n" not in msg and "run the demo again" in msg
    with pytest.raises(UserError, match="stage 'bad' failed"):  # and a main stage after it does not start
        pipe.run(Stage("later", [], "k3", call=_never))


def test_thread_share_is_applied_when_set():
    from gensis.device import apply_thread_share, set_thread_share

    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        set_thread_share(lambda: 1)
        apply_thread_share()
        assert torch.get_num_threads() == 1
        set_thread_share(None)
        apply_thread_share()
        assert torch.get_num_threads() == 1  # no share: left alone
    finally:
        set_thread_share(None)
        torch.set_num_threads(n)


def test_no_side_lane_when_asked_or_with_one_thread(monkeypatch):
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert side_threads() == 1
        monkeypatch.setenv("GENSIS_DEMO_SERIAL", "1")
        assert side_threads() == 0
        monkeypatch.delenv("GENSIS_DEMO_SERIAL")
        torch.set_num_threads(1)
        assert side_threads() == 0
    finally:
        torch.set_num_threads(n)


def test_a_warning_repeated_by_later_side_stages_is_relayed_once(tmp_path, monkeypatch, capsys):
    """Each side stage is a process that opens the data again: a folder's warning (e.g. a stale tiles.csv) was
    printed by every one of them (5 times in one demo); other lines still come through every time."""
    from types import SimpleNamespace

    from gensis.pipeline.lanes import SideLane

    (tmp_path / "warnmod.py").write_text("import sys\nprint('gensis: warning: FOLDER/tiles.csv names no slide', "
                                         "file=sys.stderr)\nprint('stage', sys.argv[1], 'done')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    lane = SideLane(1, lambda stage, execute: execute([stage.name]), lambda name: None)
    for name in ("a", "b"):
        lane.submit(SimpleNamespace(name=name, extra={"module": "warnmod"}))
    lane.join()
    err = capsys.readouterr().err
    assert err.count("gensis: warning: FOLDER/tiles.csv names no slide") == 1
    assert "stage a done" in err and "stage b done" in err


def test_a_ctrl_c_the_side_lane_child_shares_is_one_line_of_the_demo(tmp_path, monkeypatch, capsys):
    """A Ctrl-C reaches the demo and its side-lane child (one process group): the child's 'gensis: interrupted;
    run the demo again ...' was relayed, then the demo printed the same line: two lines. Now the child's line is
    held back and the side lane raises KeyboardInterrupt (the demo's own line, printed once by the command line,
    exit 130); a child's other lines come through."""
    from types import SimpleNamespace

    from gensis.pipeline.lanes import SideLane

    (tmp_path / "intmod.py").write_text(
        "import sys\nprint('epoch 1 of 3', file=sys.stderr)\n"
        "print('gensis: interrupted; run the demo again with the same --out: it continues', file=sys.stderr)\n"
        "sys.exit(130)\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    lane = SideLane(1, lambda stage, execute: execute([stage.name]), lambda name: None)
    lane.submit(SimpleNamespace(name="pixel", extra={"module": "intmod"}))
    with pytest.raises(KeyboardInterrupt):
        lane.join()
    err = capsys.readouterr().err
    assert "epoch 1 of 3" in err and "interrupted" not in err, err
