"""What a hostile environment does (issue 10, "A fault-injection suite"): each case asserts that the user sees
at most a few lines, no traceback, a non-zero exit, and that nothing already on disk was damaged.

Kills at random points of pretrain / eldm train / bank are in tests/ssl, tests/eldm and tests/bank (kill, resume,
compare with an uninterrupted run); the autoencoder's and the demo's are here. The run-folder lock is tested
with two real processes in tests/core/test_rundir.py.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gensis.rundir import atomic_write_json, save_tensors

from fault_helpers import TINY_PRETRAIN, assert_refused, gensis, main, snapshot


# ---- config ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["pretrain", "optim.epochs=0"], "optim.epochs=0: must be an integer >= 1"),
    (["pretrain", "optim.lr=nan"], "optim.lr=nan: must be a finite number > 0"),
    (["pretrain", "data.val_fraction=nan"], "data.val_fraction=nan"),
    (["pretrain", "optim.batch_size=0"], "optim.batch_size=0"),
    (["eldm", "train", "--encoder", "X", "optim.epochs=-1"], "optim.epochs=-1"),
    (["bank", "generate", "--eldm", "X", "storage.shard_size=0"], "storage.shard_size=0"),
])
def test_bad_config_value_is_refused_before_any_work(tmp_path, tiny_npz, capsys, argv, needle):
    out = tmp_path / "run"
    rc = main(*argv[:-1], "--data", tiny_npz, "--out", out, argv[-1])
    assert_refused(rc, capsys.readouterr().err, needle)
    assert not out.exists()


def test_a_damaged_config_file_preset(tmp_path, capsys):
    bad = tmp_path / "mine.yaml"
    bad.write_text("optim: {epochs: [1, 2\n")
    assert_refused(main("pretrain", "--out", tmp_path / "r", "--preset", bad), capsys.readouterr().err, "mine.yaml")


# ---- disk full / read-only -----------------------------------------------------------------------------

def _limit_file_size(nbytes: int):
    def f():
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    return f


def test_disk_full_during_the_checkpoint_write_then_resume(tmp_path, tiny_npz):
    run = tmp_path / "run"
    r = gensis("pretrain", "--data", tiny_npz, "--out", run, *TINY_PRETRAIN,
               preexec_fn=_limit_file_size(64 * 1024))  # config/manifest/metrics fit; a checkpoint does not
    line = assert_refused(r.returncode, r.stderr, "checkpoint.safetensors", "File too large")
    assert "cannot write" in line
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind
    assert not (run / "checkpoint.safetensors").exists()
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"
    assert main("pretrain", "--data", tiny_npz, "--out", run, *TINY_PRETRAIN, "--resume") == 0
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"


def test_read_only_output_folder(tmp_path, tiny_npz, capsys, monkeypatch):
    """Writes under a read-only folder fail with EROFS (simulated: the tests may run as root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "keep.txt").write_text("mine")
    before = snapshot(ro)
    real_open, real_mkdir = os.open, Path.mkdir

    def guarded_open(path, flags, *a, **kw):
        if str(path).startswith(str(ro)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **kw)

    def guarded_mkdir(self, *a, **kw):
        if str(self).startswith(str(ro)) and not self.exists():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(os, "open", guarded_open)
    monkeypatch.setattr(Path, "mkdir", guarded_mkdir)
    rc = main("pretrain", "--data", tiny_npz, "--out", ro / "run", *TINY_PRETRAIN)
    assert_refused(rc, capsys.readouterr().err, "Read-only file system", str(ro))
    rc = main("pretrain", "--data", tiny_npz, "--out", ro, *TINY_PRETRAIN)  # the folder itself
    assert_refused(rc, capsys.readouterr().err, str(ro))
    assert snapshot(ro) == before


# ---- damaged files ---------------------------------------------------------------------------------------

def _fake_run(folder: Path, stage: str, status: str = "running") -> Path:
    from gensis.config import dump, load_config

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(dump(load_config("pretrain", "smoke")))
    atomic_write_json(folder / "manifest.json", {"stage": stage, "status": status, "inputs": {}})
    return folder


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, tiny_npz):
    """A tiny pretraining run as a kill after its checkpoint leaves it: checkpoint written, status running."""
    run = tmp_path_factory.mktemp("killed") / "run"
    assert main("pretrain", "--data", tiny_npz, "--out", run, *TINY_PRETRAIN) == 0
    m = json.loads((run / "manifest.json").read_text())
    atomic_write_json(run / "manifest.json", {**m, "status": "running"})
    for p in run.glob("*_backbone.safetensors"):
        p.unlink()
    return run


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_checkpoint_is_named_and_left_alone(tmp_path, tiny_npz, killed_run, capsys, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(killed_run, run)
    ck = run / "checkpoint.safetensors"
    data = ck.read_bytes()
    ck.write_bytes({"garbage": os.urandom(4096), "truncated": data[:len(data) // 2], "empty": b""}[damage])
    before = snapshot(run)
    rc = main("pretrain", "--data", tiny_npz, "--out", run, *TINY_PRETRAIN, "--resume")
    assert_refused(rc, capsys.readouterr().err, str(ck), "damaged")
    assert snapshot(run) == before


def test_damaged_manifest_and_config(tmp_path, tiny_npz, capsys):
    run = _fake_run(tmp_path / "run", "pretrain")
    (run / "manifest.json").write_text('{"stage": "pretr')
    assert_refused(main("pretrain", "--data", tiny_npz, "--out", run, *TINY_PRETRAIN, "--resume"),
                   capsys.readouterr().err, "manifest.json is damaged")
    enc = _fake_run(tmp_path / "enc", "pretrain", "done")
    save_tensors(enc / "teacher_backbone.safetensors", {"w": torch.ones(2)})
    (enc / "config.yaml").write_text("data: {image_size: [\n")
    assert_refused(main("eval", "knn", "--encoder", enc, "--train", tiny_npz), capsys.readouterr().err,
                   "config.yaml is damaged")
    (enc / "config.yaml").write_text((run / "config.yaml").read_text())  # readable, but not these weights
    assert_refused(main("eval", "knn", "--encoder", enc, "--train", tiny_npz), capsys.readouterr().err,
                   "does not match the model")


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory, tiny_npz):
    out = tmp_path_factory.mktemp("bank") / "bank"
    assert main("bank", "generate", "--generator", "gensis.bank.fake:FakeGenerator", "--data", tiny_npz, "--out",
                out, "--preset", "smoke", "--quiet", "storage.shard_size=16", "run.threads=1") == 0
    return out


@pytest.mark.parametrize("damage", ["torn", "not-json-object", "empty"])
def test_damaged_bank_header(tmp_path, tiny_npz, small_bank, capsys, damage):
    import shutil

    bank = tmp_path / "bank"
    shutil.copytree(small_bank, bank)
    h = bank / "bank.json"
    h.write_text({"torn": h.read_text()[:100], "not-json-object": "[1, 2]", "empty": ""}[damage])
    before = snapshot(bank)
    for argv in (["bank", "verify", bank], ["bank", "show", bank, "--out", tmp_path / "g.png"],
                 ["pretrain", "--data", tiny_npz, "--bank", bank, "--out", tmp_path / "gen", *TINY_PRETRAIN],
                 ["bank", "generate", "--generator", "gensis.bank.fake:FakeGenerator", "--data", tiny_npz,
                  "--out", bank, "--preset", "smoke", "storage.shard_size=16"]):
        assert_refused(main(*argv), capsys.readouterr().err, "bank.json")
    assert snapshot(bank) == before


# ---- a folder of another stage ---------------------------------------------------------------------------

def test_run_folder_of_another_stage_as_out_or_encoder(tmp_path, tiny_npz, small_bank, capsys):
    ae = _fake_run(tmp_path / "ae", "eldm-ae", "done")
    before = snapshot(ae)
    for resume in ([], ["--resume"]):
        assert_refused(main("pretrain", "--data", tiny_npz, "--out", ae, *TINY_PRETRAIN, *resume),
                       capsys.readouterr().err, str(ae), "an autoencoder run")
    assert_refused(main("eldm", "train", "--encoder", ae, "--data", tiny_npz, "--out", tmp_path / "e",
                        "--preset", "smoke"), capsys.readouterr().err, str(ae), "not a pretraining run")
    assert_refused(main("eval", "knn", "--encoder", small_bank, "--train", tiny_npz), capsys.readouterr().err,
                   str(small_bank))
    assert_refused(main("bank", "generate", "--generator", "gensis.bank.fake:FakeGenerator", "--data", tiny_npz,
                        "--out", ae, "--preset", "smoke"), capsys.readouterr().err, str(ae))
    assert_refused(main("pretrain", "--data", tiny_npz, "--out", small_bank, *TINY_PRETRAIN),
                   capsys.readouterr().err, str(small_bank))
    assert snapshot(ae) == before


# ---- malformed datasets -----------------------------------------------------------------------------------

def _png(arr, mode=None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _folder(root: Path, bad_name: str | None = None, bad: bytes = b"") -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            (root / c / f"{i}.png").write_bytes(_png(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)))
    if bad_name:
        (root / "b" / bad_name).write_bytes(bad)
    return root


BAD_FILES = {
    "empty.png": b"",
    "truncated.png": _png(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))[:-300],
    "truncated.jpg": _jpeg()[:300],
    "not-an-image.jpg": b"hello",
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_image_file_is_named(tmp_path, capsys, name):
    data = _folder(tmp_path / "f", name, BAD_FILES[name])
    assert_refused(main("eval", "knn", "--encoder", "pixels", "--train", data), capsys.readouterr().err,
                   str(data / "b" / name), "skip_bad_images")


BAD_NPZ = {
    "object-images": dict(images=np.array([np.zeros((2, 2), np.uint8), None], dtype=object)),
    "object-labels": dict(images=np.zeros((8, 8, 8), np.uint8), labels=np.array([0, None] * 4, dtype=object)),
    "nan-images": dict(images=np.full((8, 8, 8), np.nan, np.float32)),
    "nan-labels": dict(images=np.zeros((8, 8, 8), np.uint8), labels=np.array([0.0, np.nan] * 4)),
    "labels-out-of-range": dict(images=np.zeros((8, 8, 8), np.uint8), labels=np.arange(8),
                                classes=np.array(["a", "b"])),
    "negative-labels": dict(images=np.zeros((8, 8, 8), np.uint8), labels=-np.arange(8)),
    "wrong-dims": dict(images=np.zeros((8, 8), np.uint8)),
    "two-channels": dict(images=np.zeros((8, 8, 8, 2), np.uint8)),
    "no-images": dict(pixels=np.zeros((8, 8, 8), np.uint8)),
}


@pytest.mark.parametrize("form", list(BAD_NPZ) + ["empty-file", "truncated-file"])
def test_malformed_npz_is_named(tmp_path, capsys, form):
    p = tmp_path / f"{form}.npz"
    if form in BAD_NPZ:
        np.savez(p, **BAD_NPZ[form])
    else:
        np.savez(p, images=np.zeros((50, 16, 16), np.uint8))
        p.write_bytes(b"" if form == "empty-file" else p.read_bytes()[:3000])
    assert_refused(main("eval", "knn", "--encoder", "pixels", "--train", p), capsys.readouterr().err, str(p))


def test_unusual_image_modes_work(tmp_path, capsys):
    """CMYK, 16-bit, RGBA and palette images in a folder: read, converted, evaluated."""
    data = _folder(tmp_path / "f")
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(data / "a" / "cmyk.jpg")
    Image.fromarray((np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)).save(data / "a" / "g16.png")
    Image.new("RGBA", (16, 16), (10, 20, 30, 128)).save(data / "b" / "rgba.png")
    Image.new("P", (16, 16), 3).save(data / "b" / "pal.png")
    assert main("eval", "knn", "--encoder", "pixels", "--train", data) == 0, capsys.readouterr().err


def test_unreadable_image_met_mid_training_stops_at_the_last_checkpoint_and_resumes(tmp_path, capsys, monkeypatch):
    """A large set (checked lazily): the stage stops with one line naming the file; fixed, --resume finishes."""
    from gensis.data import sources

    monkeypatch.setattr(sources, "FULL_DECODE_LIMIT", 0)
    sources._CHECKED.clear()
    data = _folder(tmp_path / "f")
    good = (data / "b" / "7.png").read_bytes()
    bad = good[:60] + bytes(len(good) - 60)  # damaged in place (bad sector, bit rot): found only when decoded
    (data / "b" / "7.png").write_bytes(bad)
    run = tmp_path / "run"
    rc = main("pretrain", "--data", f"{data}@all", "--out", run, *TINY_PRETRAIN, "data.num_workers=1")
    line = assert_refused(rc, capsys.readouterr().err, str(data / "b" / "7.png"))
    # met in epoch 0: no checkpoint yet, so no --resume hint (the same command starts the run again)
    assert not (run / "checkpoint.safetensors").exists() and "--resume" not in line, line
    (data / "b" / "7.png").write_bytes(good)
    assert main("pretrain", "--data", f"{data}@all", "--out", run, *TINY_PRETRAIN, "data.num_workers=1",
                "--resume") == 0, capsys.readouterr().err
    sources._CHECKED.clear()
    (data / "b" / "7.png").write_bytes(bad)
    rc = main("pretrain", "--data", f"{data}@all", "--out", tmp_path / "skip", *TINY_PRETRAIN,
              "data.skip_bad_images=true")
    assert rc == 0 and "skipped" in capsys.readouterr().err


TINY_AE = ["--preset", "smoke", "data.image_size=16", "data.limit=null", "ae.optim.batch_size=16", "ae.optim.epochs=2",
           "ae.val_images=8", "train.threads=1", "train.amp=off", "data.num_workers=0"]


@pytest.mark.parametrize("stage", [["pretrain", *TINY_PRETRAIN], ["eldm", "train-ae", *TINY_AE]],
                         ids=["pretrain", "train-ae"])
def test_input_damaged_after_a_checkpoint_ends_the_line_with_how_to_resume(tmp_path, capsys, monkeypatch, stage):
    """Images damaged on disk between epoch 0 and epoch 1 (every training stage reads them through the one loop,
    gensis.train.loop): one line naming a file, exit 2, and, since epoch 0's checkpoint exists, how to continue
    (the file restored, then --resume from epoch 1). Restored, --resume finishes the run."""
    from gensis.train import loop

    data = _folder(tmp_path / "f")
    files = sorted((data / "b").glob("*.png"))  # half of the set: every batch of epoch 1 holds some
    good = {f: f.read_bytes() for f in files}
    original = loop._save

    def save_then_damage(task, rt, run, epoch):
        original(task, rt, run, epoch)
        if epoch == 0:
            for f in files:
                f.write_bytes(good[f][:60] + bytes(len(good[f]) - 60))

    monkeypatch.setattr(loop, "_save", save_then_damage)
    run = tmp_path / "run"
    argv = (*stage[:2 if stage[0] == "eldm" else 1], "--data", f"{data}@all", "--out", run, "--quiet",
            *stage[2 if stage[0] == "eldm" else 1:])
    rc = main(*argv)
    err = capsys.readouterr().err
    line = assert_refused(rc, err, str(data / "b"), "then rerun with --resume to continue from epoch 1",
                          "(the checkpoint of epoch 0 is kept)", "restore that file as it was", max_lines=1)
    assert rc == 2 and line.startswith("gensis: error: cannot read image "), line
    for f in files:
        f.write_bytes(good[f])
    monkeypatch.setattr(loop, "_save", original)
    assert main(*argv, "--resume") == 0, capsys.readouterr().err
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"


def test_bad_image_replaced_by_one_of_another_size_resumes_but_other_files_are_refused(tmp_path, capsys,
                                                                                       monkeypatch):
    """Issue 10.4 "resumable once the file is fixed": the fixed file has other bytes (and byte size) than the
    damaged one, so the dataset's content identity changes; --resume compares names + labels + split, and
    still refuses a folder with other files."""
    from gensis.data import sources

    monkeypatch.setattr(sources, "FULL_DECODE_LIMIT", 0)
    sources._CHECKED.clear()
    data = _folder(tmp_path / "f")
    good = (data / "b" / "7.png").read_bytes()
    (data / "b" / "7.png").write_bytes(good[:60] + bytes(len(good) - 60))
    run = tmp_path / "run"
    argv = ("pretrain", "--data", f"{data}@all", "--out", run, *TINY_PRETRAIN, "data.num_workers=1")
    assert_refused(main(*argv), capsys.readouterr().err, str(data / "b" / "7.png"))
    first_identity = json.loads((run / "manifest.json").read_text())["inputs"]["data_identity"]
    fixed = _png(np.full((24, 20, 3), 200, np.uint8))  # a valid replacement of another size
    assert len(fixed) != len(good)
    (data / "b" / "7.png").write_bytes(fixed)
    (data / "b" / "extra.png").write_bytes(fixed)  # another file: another dataset, refused
    assert_refused(main(*argv, "--resume"), capsys.readouterr().err, "input data (other files, labels or split)")
    (data / "b" / "extra.png").unlink()
    assert main(*argv, "--resume") == 0, capsys.readouterr().err
    m = json.loads((run / "manifest.json").read_text())
    assert m["inputs"]["data_identity"] != first_identity  # provenance: the content identity of the data used
    assert (run / "metrics.jsonl").is_file()


# ---- kills at random points ------------------------------------------------------------------------------

def test_autoencoder_killed_at_a_random_point_resumes_to_the_uninterrupted_weights(tmp_path, tiny_npz):
    from safetensors.torch import load_file

    over = ["--preset", "smoke", "--quiet", "data.image_size=16", "data.limit=null", "ae.optim.batch_size=16",
            "ae.optim.epochs=4", "ae.val_images=8", "train.threads=1", "train.amp=off"]
    ref = tmp_path / "ref"
    assert main("eldm", "train-ae", "--data", tiny_npz, "--out", ref, *over) == 0
    run = tmp_path / "killed"
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.0, 0.5)  # after the first checkpoint: mid-epoch or mid-write
    proc = subprocess.Popen([sys.executable, "-m", "gensis.cli.main", "eldm", "train-ae", "--data", str(tiny_npz),
                             "--out", str(run), *over], env={**os.environ, "OMP_NUM_THREADS": "1"})
    t0 = time.time()
    while proc.poll() is None and not (run / "checkpoint.safetensors").exists() and time.time() - t0 < 120:
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if (run / "autoencoder.safetensors").exists():
        pytest.skip(f"the run finished before the kill (seed {seed})")
    assert main("eldm", "train-ae", "--data", tiny_npz, "--out", run, *over, "--resume") == 0, f"seed {seed}"
    a, b = load_file(ref / "autoencoder.safetensors"), load_file(run / "autoencoder.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"seed {seed}"
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def _rows(run: Path) -> list[dict]:
    """metrics.jsonl without its timings (which differ between any two runs)."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "images_per_s")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_autoencoder_killed_just_after_a_checkpoint_resumes_to_the_uninterrupted_metrics(tmp_path, tiny_npz,
                                                                                       monkeypatch):
    """A kill right after an epoch's checkpoint was written: the checkpoint came before the epoch's held-out
    metrics (val_l1, val_psnr ...), so the resumed run, which starts at the next epoch, never logged that epoch's
    row (metrics.jsonl one row short of the uninterrupted run's). Now the held-out row is logged before the
    checkpoint: the same rows as a run never interrupted."""
    import gensis.train.loop as loop

    over = ["--preset", "smoke", "--quiet", "data.image_size=16", "data.limit=null", "ae.optim.batch_size=16",
            "ae.optim.epochs=2", "ae.val_images=8", "train.threads=1", "train.amp=off"]
    ref, run = tmp_path / "ref", tmp_path / "killed"
    assert main("eldm", "train-ae", "--data", tiny_npz, "--out", ref, *over) == 0
    real_save = loop._save

    def killed_after_the_first_checkpoint(task, rt, run_dir, epoch):
        real_save(task, rt, run_dir, epoch)
        raise KeyboardInterrupt  # the kill: nothing of this process runs after the checkpoint is in place

    monkeypatch.setattr(loop, "_save", killed_after_the_first_checkpoint)
    assert main("eldm", "train-ae", "--data", tiny_npz, "--out", run, *over) == 130
    monkeypatch.setattr(loop, "_save", real_save)
    assert main("eldm", "train-ae", "--data", tiny_npz, "--out", run, *over, "--resume") == 0
    assert any("val_l1" in r for r in _rows(ref))
    assert _rows(run) == _rows(ref)


@pytest.mark.slow
def test_demo_killed_then_rerun_finishes_and_reuses_finished_stages(tmp_path):
    out = tmp_path / "demo"
    argv = [sys.executable, "-m", "gensis.cli.main", "demo", "--preset", "smoke", "--out", str(out), "--stages",
            "dino,pixel,eval", "--no-linear", "--quiet"]
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while proc.poll() is None and not (out / "pixel").exists() and time.time() - t0 < 300:
        time.sleep(0.05)
    time.sleep(random.uniform(0, 2))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[dino] up to date" in r.stderr and "DINO w/ pixel disent." in r.stdout
    assert json.loads((out / "pixel" / "manifest.json").read_text())["status"] == "done"


def test_ctrl_c_while_dataloader_workers_start_is_interrupted_130_no_temp_files(tmp_path):
    """A Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during `pretrain` with
    data.num_workers=2 that lands while an epoch forks its workers: Python swallowed the parent's
    KeyboardInterrupt (raised in an after-fork hook: "Exception ignored in ... KeyboardInterrupt"), and the run
    either went on to the end (exit 0, the Ctrl-C ignored) or, when the interrupted worker died, failed 5 s later
    with torch's "DataLoader worker (pid ...) exited unexpectedly" (two tracebacks, exit 1). Now "gensis:
    interrupted", exit 130, no temporary file left in the run folder and no process left running."""
    data = _folder(tmp_path / "f")
    run = tmp_path / "run"
    argv = ["pretrain", "--data", f"{data}@all", "--out", str(run), *TINY_PRETRAIN, "optim.epochs=3",
            "data.num_workers=2"]
    script = f"""
import os, signal, sys
# as a terminal starts it: Ctrl-C neither blocked nor ignored (a state the test runner may pass down otherwise)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})
signal.signal(signal.SIGINT, signal.default_int_handler)
forks = [0]
def ctrl_c():  # the Ctrl-C arrives as the first worker of the 2nd epoch is forked
    forks[0] += 1
    if forks[0] == 3:
        os.killpg(0, signal.SIGINT)
os.register_at_fork(after_in_parent=ctrl_c)
from gensis.cli.main import main
sys.exit(main({argv!r}))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       start_new_session=True, env={**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"})
    line = "gensis: interrupted; run the same command with --resume to continue from its last epoch checkpoint"
    assert p.returncode == 130 and p.stderr.strip() == line, (p.returncode, p.stderr[-3000:])
    assert not [f for f in run.rglob("*") if ".gensis-tmp-" in f.name or f.suffix == ".tmp"]
    for _ in range(50):  # workers are gone (they exit when the loader shuts down)
        left = subprocess.run(["pgrep", "-f", str(run)], capture_output=True, text=True).stdout.split()
        if not left:
            break
        time.sleep(0.1)
    assert not left, left


def test_sigterm_to_the_process_group_stops_like_ctrl_c_143_and_resumes(tmp_path):
    """SIGTERM to the whole process group (a scheduler's time limit: SLURM signals every process of the job step;
    also `kill`, `timeout`) during `pretrain` with DataLoader workers: the process died at once, with no line and
    its folder's lock left behind. Now it stops as a Ctrl-C does: one line naming SIGTERM and how to continue, exit
    143, no temporary file, lock released, no worker left; `--resume` then finishes the run."""
    data = _folder(tmp_path / "f")
    run = tmp_path / "run"
    argv = ["pretrain", "--data", f"{data}@all", "--out", str(run), *TINY_PRETRAIN, "optim.epochs=30",
            "data.num_workers=2"]
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TORCHELASTIC_RUN_ID", None), env.pop("LOCAL_RANK", None)
    script = f"import signal, sys\nsignal.signal(signal.SIGTERM, signal.SIG_DFL)\n" \
             f"from gensis.cli.main import main\nsys.exit(main({argv!r}))\n"
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoint.safetensors").exists() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()[1][-3000:]
        time.sleep(0.3)  # inside the next epochs, workers running
        os.killpg(p.pid, signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    line = "gensis: interrupted (SIGTERM); run the same command with --resume to continue from its last epoch " \
           "checkpoint"
    assert p.returncode == 143 and err.strip() == line, (p.returncode, err[-3000:])
    assert not (run / ".gensis.lock").exists()
    assert not [f for f in run.rglob("*") if ".gensis-tmp-" in f.name or f.suffix == ".tmp"]
    for _ in range(50):
        left = subprocess.run(["pgrep", "-f", str(run)], capture_output=True, text=True).stdout.split()
        if not left:
            break
        time.sleep(0.1)
    assert not left, left
    assert json.loads((run / "manifest.json").read_text())["status"] != "done"
    r = subprocess.run([sys.executable, "-m", "gensis", *argv, "--resume"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "manifest.json").read_text())["status"] == "done"


def test_ctrl_c_while_python_exits_ends_quietly_with_the_commands_status():
    """A Ctrl-C just after a command's last line (Python's teardown took 1.5-3 s: its last garbage collections walk
    torch's objects) ended with status -2 and no line, or a traceback from torch's atexit hook. Now the teardown is
    quick (gc.freeze, benchmarks/exit_time.py) and a Ctrl-C in it ends the process at once with the command's own
    status, quietly: the command was done."""
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    argv = ["eval", "knn", "--encoder", "pixels", "--train", "builtin:digits", "--test", "builtin:digits@val", "--k",
            "5", "--quiet"]
    # the command as its console script runs it (entry), with a line once main has returned: the signal then lands in
    # the teardown, not in the command's last instants (where it is the command's own Ctrl-C, exit 130)
    script = "import sys\nimport gensis.cli.main as m\nq = m.quick_exit\n" \
             "def marked(status):\n    q(status)\n    print('test: main returned', flush=True)\n" \
             f"m.quick_exit = marked\nsys.argv[1:] = {argv!r}\nm.entry()\n"
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True, env=env)
    try:
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith("test: main returned"):
                os.killpg(p.pid, signal.SIGINT)
                break
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 0 and err == "", (p.returncode, err[-3000:])


def test_the_console_script_and_python_m_run_entry():
    """`gensis` and `python -m gensis` exit through ``entry`` (the quick exit above), not a bare ``main``."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gensis"] == "gensis.cli.main:entry"
    assert "entry()" in (root / "src" / "gensis" / "__main__.py").read_text()
