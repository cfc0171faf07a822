"""Bad input gets one clear line on stderr and exit status 2, never a traceback."""

import os
import subprocess
import sys

import numpy as np
import pytest


def gensis(*args):
    return subprocess.run([sys.executable, "-m", "gensis.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, "GENSIS_NO_PROGRESS": "1"})


def _one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("gensis: error:"), r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def corrupt_folder(tmp_path):
    from PIL import Image

    d = tmp_path / "imgs" / "a"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "ok.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return tmp_path / "imgs"


def test_pretrain_errors(tmp_path, corrupt_folder):
    _one_line_error(gensis("pretrain", "--out", str(tmp_path / "r"), "--preset", "smoke", "optim.epoks=2"),
                    "optim.epoks", "optim.epochs")
    _one_line_error(gensis("pretrain", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "missing")),
                    "not found")
    _one_line_error(gensis("pretrain", "--out", str(tmp_path / "r"), "--data", str(corrupt_folder)), "broken.jpg")
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((10, 8, 8), np.uint8), labels=np.zeros(7, np.int64))
    _one_line_error(gensis("pretrain", "--out", str(tmp_path / "r"), "--data", str(bad)), "labels")
    _one_line_error(gensis("pretrain", "--out", str(tmp_path / "r"), "--preset", "tiny"), "preset")


def test_eval_and_debug_flag(tmp_path):
    _one_line_error(gensis("eval", "knn", "--encoder", str(tmp_path / "norun")), "norun")
    r = gensis("--debug", "pretrain", "--out", str(tmp_path / "r"), "--data", str(tmp_path / "missing"))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_help_of_every_verb():
    for verb in (["pretrain"], ["eval", "knn"], ["eval", "linear"], ["demo"], ["eldm", "train"], ["bank", "generate"],
                 ["report"]):
        r = gensis(*verb, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout, verb


def test_demo_bad_seeds(tmp_path):
    _one_line_error(gensis("demo", "--out", str(tmp_path / "d"), "--seeds", "0,one"), "--seeds", "one")
    assert not (tmp_path / "d").exists()  # nothing written before the arguments are checked


def test_overrides_may_follow_options(tmp_path):
    r = gensis("pretrain", "--preset", "smoke", "optim.epochs=1", "--out", str(tmp_path / "r"), "train.seed=5",
               "--print-config")
    assert r.returncode == 0, r.stderr
    assert "epochs: 1" in r.stdout and "seed: 5" in r.stdout
    r = gensis("pretrain", "--out", str(tmp_path / "r"), "--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr


def test_demo_negative_seed_is_refused_before_anything_is_written(tmp_path, capsys):
    """`gensis demo --seed -1` wrote its settings, and `gensis wsi demo --seed -1` tiled its slide, before the
    first training refused train.seed=-1; --seeds 0,-1 likewise: now one line before anything is written."""
    from gensis.cli.main import main

    for argv in (["demo", "--preset", "smoke", "--seed", "-1"], ["demo", "--preset", "smoke", "--seeds", "0,-1"],
                 ["wsi", "demo", "--seed", "-1"], ["demo", "--preset", "wsi", "--seed", "-2"]):
        out = tmp_path / "d"
        assert main([*argv, "--out", str(out)]) == 2, argv
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "seed" in err[0] and ">= 0" in err[0], (argv, err)
        assert not out.exists(), argv


def test_ctrl_c_while_torch_is_being_imported_is_one_line(tmp_path):
    """A Ctrl-C in the first seconds of a command (torch still importing) printed two tracebacks: the CLI's error
    path imported gensis.distributed, hence torch again, whose half-done first import made that a RuntimeError
    ('Trying to override a python impl ...'). Now: 'gensis: interrupted', exit 130."""
    script = f"""
import sys
import gensis.cli.report as report

class HalfImportedTorch:  # what a Ctrl-C inside `import torch` leaves: importing it again fails
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise RuntimeError("Trying to override a python impl for DispatchKey.Meta on operator aten::x")
        return None

def interrupted(args):
    sys.meta_path.insert(0, HalfImportedTorch())
    raise KeyboardInterrupt

report.run = interrupted
from gensis.cli.main import main
sys.exit(main(["report", {str(tmp_path)!r}]))
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "GENSIS_NO_PROGRESS": "1"})
    assert r.returncode == 130, r.stderr[-2000:]
    assert r.stderr.strip() == "gensis: interrupted", r.stderr[-2000:]


def test_report_on_a_demo_whose_dino_manifest_has_no_inputs(tmp_path, capsys):
    """`gensis report DEMO` was a KeyError traceback when DEMO/dino/manifest.json records no inputs (hand-made,
    or written by an older version): the report is written without what needs the data."""
    import json

    from gensis.cli.main import main

    demo = tmp_path / "demo"
    (demo / "dino").mkdir(parents=True)
    (demo / "dino" / "manifest.json").write_text(json.dumps({"stage": "pretrain", "status": "done"}))
    (demo / "stages.json").write_text(json.dumps({"dino": "0123456789abcdef"}))
    assert main(["report", str(demo)]) == 0, capsys.readouterr().err
    assert (demo / "report.md").is_file() and (demo / "report.html").is_file()


@pytest.mark.parametrize("module, func, argv, hint", [
    ("bank", "run_generate", ["bank", "generate", "--out", "B"],
     "; run the same command again to continue (finished shards are kept)"),
    ("eldm", "run_train", ["eldm", "train", "--encoder", "E", "--out", "R"],
     "; run the same command with --resume to continue from its last epoch checkpoint"),
    ("eldm", "run_train_ae", ["eldm", "train-ae", "--out", "R"], "; run the same command with --resume"),
    ("pretrain", "run", ["pretrain", "--out", "R"], "; run the same command with --resume"),
    ("wsi", "run_embed", ["wsi", "embed", "--encoder", "E", "--tiles", "T", "--out", "F"],
     "; run the same command again to continue (finished slides are kept)"),
    ("wsi", "run_demo", ["wsi", "demo"], "; run the same command again with the same --out: it continues"),
    ("mil", "run_train", ["mil", "train", "--feats", "F", "--labels", "l.csv", "--out", "M"],
     "; run the same command again to continue (finished folds and seeds are kept)"),
    ("report", "run", ["report", "R"], None)])
def test_ctrl_c_says_how_to_continue_where_the_command_can(module, func, argv, hint, monkeypatch, capsys):
    """A Ctrl-C in `eldm train` or `bank generate` said only 'gensis: interrupted': not that the bank continues
    when the same command is run again, or that a training run needs --resume. Commands that do not continue
    keep the bare line."""
    import importlib

    from gensis.cli.main import main
    from gensis.train.next_step import IN_DEMO

    monkeypatch.delenv(IN_DEMO, raising=False)

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(f"gensis.cli.{module}"), func, interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("gensis: interrupted") and len(err.splitlines()) == 1
    assert (hint in err) if hint else err == "gensis: interrupted", err


def test_ctrl_c_while_the_verbs_are_imported_is_the_interrupted_line(monkeypatch, capsys):
    """A Ctrl-C in the first second of `gensis pretrain ...` (while the verbs' modules are imported to build the
    parser) was a KeyboardInterrupt traceback and exit status -2 (killed by SIGINT); now 'gensis: interrupted', 130,
    as a Ctrl-C a moment later."""
    import gensis.cli.main as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["pretrain", "--out", "R"]) == 130
    assert capsys.readouterr().err.strip() == "gensis: interrupted"
