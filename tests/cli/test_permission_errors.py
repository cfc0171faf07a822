"""A refused access (EACCES, EPERM) names what failed and where: reading an input is one line "cannot read ..."
(exit 2), writing an output one line "cannot write PATH" (exit 1); never the other verb, no traceback.

With real permissions where the test can lose them (not root; or root without its permission override, through
``setpriv``), and simulated in-process (``PermissionError`` raised where the OS would) everywhere."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gensis.cli.main import main
from gensis.errors import UserError, operation, reading, writing


def _images(folder: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / c / f"{i}.png")
    return folder


def _unprivileged_prefix() -> list[str] | None:
    """The command prefix that runs a process without the override of file permissions: none needed when not
    root; root's bounding set without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (setpriv); None when impossible."""
    if os.geteuid() != 0:
        return []
    exe = shutil.which("setpriv")
    if exe is None:
        return None
    cmd = [exe, "--bounding-set", "-dac_override,-dac_read_search"]
    return cmd if subprocess.run([*cmd, "true"], capture_output=True).returncode == 0 else None


@pytest.fixture
def unprivileged() -> list[str]:
    prefix = _unprivileged_prefix()
    if prefix is None:
        pytest.skip("root here cannot drop its override of file permissions (no setpriv, or not allowed)")
    return prefix


def _gensis(prefix: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "gensis.cli.main", *args], capture_output=True,
                          text=True, env={**os.environ, "GENSIS_NO_PROGRESS": "1"}, timeout=300)


def _line(rc: int, err: str, want_rc: int) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert rc == want_rc and len(lines) == 1 and "Traceback" not in err, (rc, err[-2000:])
    return lines[0]


def test_unreadable_class_folder_is_a_read_error_naming_it(tmp_path, unprivileged):
    data = _images(tmp_path / "imgs")
    os.chmod(data / "a", 0)
    try:
        r = _gensis(unprivileged, "eval", "knn", "--encoder", "pixels", "--train", str(data), "--k", "1")
    finally:
        os.chmod(data / "a", 0o755)
    line = _line(r.returncode, r.stderr, 2)
    # the exception's own path: the first one the OS refused inside the folder that cannot be searched
    # (it was {data}/a/patches, a path that never existed: the probe for a tiles folder)
    assert line.startswith(f"gensis: error: cannot read the data {data}: permission denied on {data / 'a'} "), line
    assert "write" not in line


def test_unwritable_output_is_a_write_error_naming_it(tmp_path, unprivileged):
    data = _images(tmp_path / "imgs")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        r = _gensis(unprivileged, "eval", "knn", "--encoder", "pixels", "--train", str(data), "--k", "1",
                    "--json", str(ro / "knn.json"))
        line = _line(r.returncode, r.stderr, 1)
        assert line.startswith(f"gensis: error: cannot write {ro / 'knn.json'}: Permission denied"), line
        r = _gensis(unprivileged, "pretrain", "--data", str(data), "--out", str(ro / "run"), "--preset", "smoke")
        line = _line(r.returncode, r.stderr, 1)
        assert line.startswith(f"gensis: error: cannot write {ro / 'run'}: Permission denied"), line
        assert not list(ro.iterdir())
    finally:
        os.chmod(ro, 0o755)


# ---- the same, simulated in-process (runs as root too) -----------------------------------------------------

def _refuse(monkeypatch, method: str, path: Path) -> None:
    """``Path.<method>`` on ``path`` raises what the OS raises on a refused access."""
    real = getattr(Path, method)

    def refused(self, *a, **kw):
        if self == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *a, **kw)

    monkeypatch.setattr(Path, method, refused)


def test_simulated_read_and_write_refusals_get_their_verbs(tmp_path, monkeypatch, capsys):
    data = _images(tmp_path / "imgs")
    real_scandir = os.scandir

    def scandir(path="."):  # the listing of one class folder is refused
        if Path(path) == data / "a":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(data), "--k", "1"]) == 2
    line = _line(0, capsys.readouterr().err, 0)
    assert line.startswith(f"gensis: error: cannot read the data {data}: permission denied on {data / 'a'} "), line
    monkeypatch.undo()

    out = tmp_path / "out" / "run"
    _refuse(monkeypatch, "mkdir", out)
    assert main(["pretrain", "--data", str(data), "--out", str(out), "--preset", "smoke", "--quiet"]) == 1
    line = _line(0, capsys.readouterr().err, 0)
    assert line.startswith(f"gensis: error: cannot write {out}: Permission denied"), line


def test_a_config_file_that_cannot_be_read(tmp_path, monkeypatch, capsys):
    preset = tmp_path / "mine.yaml"
    preset.write_text("optim:\n  lr: 0.1\n")
    _refuse(monkeypatch, "read_text", preset)
    assert main(["pretrain", "--out", str(tmp_path / "run"), "--preset", str(preset), "--print-config"]) == 2
    line = _line(0, capsys.readouterr().err, 0)
    assert line == (f"gensis: error: cannot read the config file {preset}: permission denied (check the "
                    f"permissions of that path and of the folders above it)")


def test_reading_and_writing_tags():
    denied = PermissionError(errno.EACCES, "Permission denied", "/x/y")
    with pytest.raises(UserError, match=r"^cannot read the data /x: permission denied on /x/y \("):
        with reading("the data /x"):
            raise denied
    # a write inside a read (e.g. a cache written while data is opened) stays a write error
    with pytest.raises(PermissionError) as info:
        with reading("the data /x"), writing():
            raise PermissionError(errno.EACCES, "Permission denied", "/x/cache")
    assert operation(info.value) == "write"
    # unknown: an access error nobody tagged; known by its errno: a full disk is only ever a write
    assert operation(PermissionError(errno.EACCES, "Permission denied")) is None
    assert operation(OSError(errno.ENOSPC, "No space left on device")) == "write"
    with pytest.raises(FileNotFoundError):  # other errors pass unchanged
        with reading("the data /x"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/x")


def test_the_report_s_figure_folder_is_a_write(tmp_path, monkeypatch, capsys):
    """Not "cannot access": the report's figure folder (as an E-LDM run's sub-folders, the TensorBoard folder)
    is made by ``rundir.make_folder``."""
    import json

    out = tmp_path / "demo"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({}))
    _refuse(monkeypatch, "mkdir", out / "report")
    assert main(["report", str(out)]) == 1
    line = _line(0, capsys.readouterr().err, 0)
    assert line.startswith(f"gensis: error: cannot write {out / 'report'}: Permission denied"), line


def test_an_export_s_staging_folder_is_a_write(tmp_path, monkeypatch):
    from gensis.export.atomic import staged_folder

    real_mkdir = Path.mkdir

    def mkdir(self, *a, **kw):  # the staging folder (a hidden temporary name next to OUT) is refused
        if self.name.startswith(".gensis-tmp-"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(PermissionError) as info:
        with staged_folder(tmp_path / "exported"):
            pass
    assert operation(info.value) == "write"


def test_hashing_weights_is_a_read(tmp_path, monkeypatch):
    from gensis.rundir import file_hash

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    real_open = open

    def refused_open(path, *a, **kw):
        if Path(path) == weights:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real_open(path, *a, **kw)

    import gensis.rundir

    monkeypatch.setattr(gensis.rundir, "open", refused_open, raising=False)
    with pytest.raises(UserError, match=rf"^cannot read {weights}: permission denied \(check"):
        file_hash(weights)


def test_a_bank_header_that_cannot_be_read_is_not_called_damaged(tmp_path, monkeypatch):
    from gensis.bank.reader import BankReader

    bank = tmp_path / "bank"
    bank.mkdir()
    (bank / "bank.json").write_text("{}")
    _refuse(monkeypatch, "read_text", bank / "bank.json")
    with pytest.raises(UserError, match=rf"^cannot read the bank {bank}: permission denied on {bank / 'bank.json'}"):
        BankReader(bank)


def test_a_bank_that_cannot_be_read_is_a_read_error(tmp_path, monkeypatch, capsys):
    """``gensis pretrain --bank B`` where B's header cannot even be looked at (its folder not searchable)."""
    data = _images(tmp_path / "imgs")
    bank = tmp_path / "bank"
    bank.mkdir()
    _refuse(monkeypatch, "is_file", bank / "bank.json")
    assert main(["pretrain", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "smoke", "--quiet",
                 "--bank", str(bank), "optim.batch_size=4"]) == 2
    line = _line(0, capsys.readouterr().err, 0)
    assert line.startswith(f"gensis: error: cannot read the bank {bank}: permission denied on {bank / 'bank.json'}"), line


def test_the_environment_error_says_how_to_go_on_for_a_command_and_for_a_demo(tmp_path, monkeypatch, capsys):
    """A command has --resume; a demo (typed, or one of its stages run as a command) continues when run again."""
    from gensis.cli.main import _run_again
    from gensis.train.next_step import IN_DEMO

    data = _images(tmp_path / "imgs")
    out = tmp_path / "out" / "run"
    _refuse(monkeypatch, "mkdir", out)
    monkeypatch.delenv(IN_DEMO, raising=False)
    assert main(["pretrain", "--data", str(data), "--out", str(out), "--preset", "smoke", "--quiet"]) == 1
    line = _line(0, capsys.readouterr().err, 0)
    assert line.endswith("run the same command with --resume to continue from its last epoch checkpoint)"), line
    monkeypatch.setenv(IN_DEMO, "dino")  # a demo's side-lane stage
    assert main(["pretrain", "--data", str(data), "--out", str(out), "--preset", "smoke", "--quiet"]) == 1
    line = _line(0, capsys.readouterr().err, 0)
    assert line.endswith("run the demo again with the same --out: it continues)") and "--resume" not in line, line
    monkeypatch.delenv(IN_DEMO)
    import argparse

    assert "--resume" not in _run_again(argparse.Namespace(verb="demo"))
    assert "--resume" in _run_again(argparse.Namespace(verb="pretrain"))


@pytest.mark.parametrize("module, func, argv, hint", [
    ("bank", "run_generate", ["bank", "generate", "--out", "B"],
     "run the same command again to continue (finished shards are kept))"),
    ("wsi", "run_tile", ["wsi", "tile", "s.svs", "--out", "T"],
     "run the same command again to continue (finished slides are kept))"),
    ("mil", "run_train", ["mil", "train", "--feats", "F", "--labels", "l.csv", "--out", "M"],
     "run the same command again to continue (finished folds and seeds are kept))"),
    ("eldm", "run_train", ["eldm", "train", "--encoder", "E", "--out", "R"], "run the same command with --resume"),
    ("export", "run", ["export", "R", "--to", "timm", "O"], "fix the cause and run the command again)")])
def test_a_full_disk_says_how_to_go_on_in_the_command_s_own_terms(module, func, argv, hint, monkeypatch, capsys):
    """A full disk in `bank generate` (or `wsi tile`, `mil train`) ended 'run again with --resume where the command
    has it', sending the user to an option those commands do not take (rejected: 'unrecognized arguments:
    --resume'); they continue when the same command is run again. The line now says what the Ctrl-C line says."""
    import importlib

    from gensis.train.next_step import IN_DEMO

    monkeypatch.delenv(IN_DEMO, raising=False)

    def disk_full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/file")

    monkeypatch.setattr(importlib.import_module(f"gensis.cli.{module}"), func, disk_full)
    assert main(argv) == 1
    line = _line(1, capsys.readouterr().err, 1)
    assert line.startswith("gensis: error: cannot write out/file: No space left on device") and hint in line, line
    assert ("--resume" in line) == ("--resume" in hint), line
