"""Durability (tmp -> fsync -> rename -> fsync(dir)), umask, stale temps, torn logs and the run-folder lock."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image

from gensis import rundir
from gensis.errors import UserError
from gensis.rundir import (MetricsLog, RunDir, RunLock, atomic_save_image, atomic_savefig, atomic_write_bytes,
                           atomic_write_json, atomic_write_text, read_jsonl, release_folder, remove_stale_temps,
                           save_tensors)
from gensis.wsi.dataset import export_tiles
from gensis.wsi.tiler import _save_png


def _writers(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    return {
        "json": lambda: atomic_write_json(tmp_path / "a.json", {"x": 1}),
        "bytes": lambda: atomic_write_bytes(tmp_path / "b.bin", [b"ab", b"cd"]),
        "tensors": lambda: save_tensors(tmp_path / "w.safetensors", {"w": torch.ones(2)}),
        "png": lambda: atomic_save_image(Image.new("RGB", (4, 4)), tmp_path / "i.png"),
        "figure": lambda: atomic_savefig(fig, tmp_path / "f.png"),
        "wsi-thumbnail": lambda: _save_png(tmp_path / "thumb.png", np.zeros((4, 4, 3), np.uint8)),
        "wsi-export": lambda: export_tiles(_OneTile(), tmp_path, quiet=True, fmt="tif"),
    }


class _OneTile:
    """The part of a TileImageSet that ``export_tiles`` reads: one unlabelled 4×4 tile."""

    labels, classes = None, None
    slides = [type("S", (), {"slide_id": "s0"})()]

    def __len__(self):
        return 1

    def location(self, i):
        return 0, 8, 16

    def get(self, i):
        return np.full((4, 4, 3), 7, np.uint8)


def test_wsi_writers_are_durable_and_rundir_imports_no_torch(tmp_path):
    """Tiling workers write thumbnails through gensis.rundir: it must not pull torch into them."""
    export_tiles(_OneTile(), tmp_path, quiet=True, fmt="tif")
    # the tile and the export's tiles.csv (its record of tiles and labels), no temporary left
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s0_8_16.tif", "tiles.csv"]
    with Image.open(tmp_path / "s0_8_16.tif") as im:
        assert im.format == "TIFF" and np.asarray(im)[0, 0, 0] == 7
    code = "import sys, gensis.wsi.tiler, gensis.rundir; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        for name, write in _writers(tmp_path).items():
            write()
    finally:
        os.umask(old)
    for p in tmp_path.iterdir():
        assert p.stat().st_mode & 0o777 == mode, (p.name, oct(p.stat().st_mode))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_every_write_is_fsynced_then_renamed_then_the_folder_fsynced(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file"))
        return real_fsync(fd)

    def replace(a, b):
        events.append("rename")
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    for name, write in _writers(tmp_path).items():
        events.clear()
        write()
        # each file written (a writer may write several: wsi export's tile and its tiles.csv) is fsynced,
        # renamed into place, then its folder fsynced
        assert events and events == ["fsync-file", "rename", "fsync-dir"] * (len(events) // 3), (name, events)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "keep.json"
    atomic_write_json(p, {"v": 1})

    def pieces():
        yield b'{"v": '
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_bytes(p, pieces())
    assert json.loads(p.read_text()) == {"v": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.json"]


def test_stale_temps_of_dead_processes_are_removed_others_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [f".gensis-tmp-checkpoint.safetensors.{dead.pid}-0123abcd.tmp",
             f".gensis-tmp-a.b.1-x.tmp.{dead.pid}-0123abcd.tmp"]
    live = f".gensis-tmp-checkpoint.safetensors.{os.getppid()}-0123abcd.tmp"  # a live process (another rank) writes it
    # users' files, some of the shape of an older version's temporary names (".<name>.<random>.tmp")
    users = ["notes.tmp", ".hidden.tmp", "data.json", ".notes.backup.tmp", ".notes.20240101.tmp",
             f".draft.{dead.pid}-0123abcd.tmp", ".gensis-tmp-notes.tmp"]
    for n in stale + [live] + users:
        (tmp_path / n).write_text("x")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live] + users)
    # an older version's temporary names are ours only for a file gensis writes in that folder
    old = [f".manifest.json.{dead.pid}-0123abcd.tmp", ".manifest.json.ab_3xyz9.tmp"]
    for n in old:
        (tmp_path / n).write_text("x")
    removed = remove_stale_temps(tmp_path, {"manifest.json"}.__contains__)
    assert sorted(p.name for p in removed) == sorted(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live] + users)


def test_temporary_names_carry_the_gensis_marker(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(rundir.os, "replace", lambda a, b: (seen.append(os.path.basename(a)), real(a, b)))
    atomic_write_text(tmp_path / "notes.backup", "x")
    assert len(seen) == 1 and seen[0].startswith(".gensis-tmp-notes.backup.") and rundir.is_temp_name(seen[0])
    assert not rundir.is_temp_name(".notes.backup.tmp") and not rundir.is_temp_name(".notes.1234-0123abcd.tmp")


def test_a_users_dot_tmp_file_is_not_taken_for_a_temporary_file(tmp_path):
    """A user's ``.notes.backup.tmp`` (the shape of an older version's temporary names): a folder holding it is not
    claimed, and a run folder holding it keeps it on resume."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / ".notes.backup.tmp").write_text("notes")
    with pytest.raises(UserError, match=r"not empty and not a gensis run folder \(holds .notes.backup.tmp\)"):
        RunDir(mine).start("pretrain", {}, 0, {})
    assert sorted(p.name for p in mine.iterdir()) == [".notes.backup.tmp"]
    run = RunDir(tmp_path / "run")
    run.start("pretrain", {"a": 1}, 0, {})
    release_folder(run.path)
    (run.path / ".notes.backup.tmp").write_text("notes")
    (run.path / "sub").mkdir()
    (run.path / "sub" / ".notes.20240101.tmp").write_text("notes")
    run.start("pretrain", {"a": 1}, 0, {}, resume=True)
    assert (run.path / ".notes.backup.tmp").read_text() == "notes"
    assert (run.path / "sub" / ".notes.20240101.tmp").read_text() == "notes"


def test_a_users_cache_folder_is_not_claimed_the_trainers_is(tmp_path):
    """Without a manifest, ``cache/`` is the E-LDM trainer's (written before its manifest) only when it holds nothing
    but its cache files: a user's ``cache/`` is refused and kept, a killed trainer's is claimed."""
    from gensis.eldm.train import _cached

    def folder(name, files):
        f = tmp_path / name
        (f / "cache").mkdir(parents=True)
        for n, data in files.items():
            (f / "cache" / n).write_bytes(data)
        return f

    users = [folder("notes", {"notes.txt": b"mine"}),
             folder("fake", {"embeddings-train.safetensors": b"not a safetensors file"}),
             folder("other-st", {"embeddings-train.safetensors": b""})]
    save_tensors(users[2] / "cache" / "embeddings-train.safetensors", {"w": torch.zeros(2)}, {"step": 3})
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "cache").symlink_to(tmp_path / "elsewhere")
    for f in users + [tmp_path / "link"]:
        before = sorted(str(p.relative_to(f)) for p in f.rglob("*"))
        with pytest.raises(UserError, match=r"not empty and not a gensis run folder \(holds cache\)"):
            RunDir(f).start("eldm", {}, 0, {})
        assert sorted(str(p.relative_to(f)) for p in f.rglob("*")) == before
    # a trainer killed while computing its caches: the cache files, a temporary file of the next one
    killed = folder("killed", {".gensis-tmp-latents-train.safetensors.999999999-0123abcd.tmp": b"torn"})
    _cached(killed / "cache" / "embeddings-train.safetensors", {"encoder": "e1", "data": "d1"},
            lambda: {"embeddings": torch.zeros(4, 2)})
    empty = folder("empty", {})  # killed right after creating it
    for f in (killed, empty):
        RunDir(f).start("eldm", {}, 0, {})
        release_folder(f)
    assert sorted(p.name for p in (killed / "cache").iterdir()) == ["embeddings-train.safetensors"]


def test_resume_removes_stale_temps(tmp_path):
    run = RunDir(tmp_path / "run")
    run.start("pretrain", {"a": 1}, 0, {})
    (run.path / ".gensis-tmp-checkpoint.safetensors.1-deadbeef.tmp").write_bytes(b"\0" * 10)  # pid 1 alive: init
    (run.path / ".gensis-tmp-checkpoint.safetensors.999999999-deadbeef.tmp").write_bytes(b"\0" * 10)  # dead pid
    (run.path / ".checkpoint.safetensors.abcdefgh.tmp").write_bytes(b"\0" * 10)  # an older version's (mkstemp)
    (run.path / ".config.yaml.999999999-deadbeef.tmp").write_bytes(b"\0" * 10)  # an older version's
    run.start("pretrain", {"a": 1}, 0, {}, resume=True)
    assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == [
        ".gensis-tmp-checkpoint.safetensors.1-deadbeef.tmp"]


def test_torn_last_metrics_line_is_tolerated(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.9}\n{"step": 2, "lo')
    assert [r["step"] for r in read_jsonl(p)] == [0, 1]
    log = MetricsLog(p, keep_until_step=2)  # resume
    assert [r["step"] for r in log.rows()] == [0, 1]
    log.log({"step": 2, "loss": 0.8})
    assert [r["step"] for r in log.rows()] == [0, 1, 2]


def test_report_curves_survive_a_torn_log(tmp_path):
    from gensis.report import curves_figure

    (tmp_path / "dino").mkdir()
    (tmp_path / "dino" / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.5}\n{"st')
    assert curves_figure(tmp_path, tmp_path / "c.png").is_file()


def test_claim_refuses_other_stage_finished_run_and_foreign_folder(tmp_path):
    run = RunDir(tmp_path / "ae")
    run.start("eldm-ae", {}, 0, {})
    with pytest.raises(UserError, match="holds an autoencoder run, not a pretraining run; use another --out"):
        RunDir(tmp_path / "ae").start("pretrain", {}, 0, {}, resume=True)
    run.finish()
    with pytest.raises(UserError, match="already holds a finished eldm-ae run"):
        RunDir(tmp_path / "ae").start("eldm-ae", {}, 0, {})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "my-notes.txt").write_text("notes")
    with pytest.raises(UserError, match="not empty and not a gensis run folder .*my-notes.txt"):
        RunDir(tmp_path / "mine").start("pretrain", {}, 0, {})
    assert (tmp_path / "mine" / "my-notes.txt").read_text() == "notes"
    # a log (or TensorBoard events) without a manifest is not a gensis run's: a fresh run would delete it
    for name in ("metrics.jsonl", "tensorboard/events.out.tfevents.1.host"):
        mine = tmp_path / f"mine-{name.split('/')[0]}"
        (mine / name).parent.mkdir(parents=True)
        (mine / name).write_text("mine")
        with pytest.raises(UserError, match=f"not empty and not a gensis run folder .*{name.split('/')[0]}"):
            RunDir(mine).start("pretrain", {}, 0, {})
        assert (mine / name).read_text() == "mine" and not (mine / "config.yaml").exists()
    (tmp_path / "m2").mkdir()
    (tmp_path / "m2" / "manifest.json").write_text('{"stage": "pretr')
    with pytest.raises(UserError, match="manifest.json is damaged"):
        RunDir(tmp_path / "m2").start("pretrain", {}, 0, {}, resume=True)


HOLD = textwrap.dedent("""
    import sys, time
    from gensis.rundir import lock_folder
    lock_folder(sys.argv[1])
    print("locked", flush=True)
    time.sleep(60)
""")


def _holder(folder):
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_lock_refuses_a_second_process_and_takes_over_a_dead_ones(tmp_path):
    folder = tmp_path / "run"
    p = _holder(folder)
    try:
        with pytest.raises(UserError) as e:
            RunLock(folder).acquire()
        msg = str(e.value)
        assert f"pid {p.pid}" in msg and "in use by another gensis process" in msg and "\n" not in msg
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    lock = RunLock(folder).acquire()  # stale: its process is dead
    assert json.loads((folder / rundir.LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (folder / rundir.LOCK_NAME).exists()


def test_torn_lock_file_is_stale(tmp_path):
    (tmp_path / rundir.LOCK_NAME).write_text('{"pid": 12')
    RunLock(tmp_path).acquire().release()


def test_second_cli_process_on_a_run_folder_is_refused_with_one_line(tmp_path):
    folder = tmp_path / "run"
    p = _holder(folder)
    try:
        r = subprocess.run([sys.executable, "-m", "gensis.cli.main", "pretrain", "--preset", "smoke", "--out",
                            str(folder), "--resume", "optim.epochs=1", "data.limit=64"],
                           capture_output=True, text=True, timeout=300)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) <= 2 and "in use by another gensis process" in lines[-1] and "Traceback" not in r.stderr


def test_second_eldm_process_is_refused_before_it_writes_anything(tmp_path):
    """The E-LDM trainer writes cache/ while it is built: the lock is taken before (train.loop.claim_and_build)."""
    import numpy as np

    data = tmp_path / "d.npz"
    np.savez(data, images=np.random.default_rng(0).integers(0, 255, (64, 16, 16, 3), dtype=np.uint8),
             labels=np.arange(64) % 2)
    folder = tmp_path / "run"
    p = _holder(folder)
    try:
        r = subprocess.run([sys.executable, "-m", "gensis.cli.main", "eldm", "train", "--encoder", "pixels",
                            "--data", str(data), "--out", str(folder), "--preset", "smoke", "data.image_size=16",
                            "optim.epochs=1"], capture_output=True, text=True, timeout=300)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert r.returncode == 2, r.stderr
    assert "in use by another gensis process" in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr
    assert sorted(x.name for x in folder.iterdir()) == [rundir.LOCK_NAME]  # no cache/, config, manifest


def test_failed_build_removes_the_folder_it_created(tmp_path):
    from gensis.train.loop import claim_and_build

    class Boom:
        stage = "pretrain"

        def __init__(self):
            raise UserError("bad data")

    class RT:
        is_main = True

    with pytest.raises(UserError, match="bad data"):
        claim_and_build(RunDir(tmp_path / "new"), RT(), False, Boom)
    assert not (tmp_path / "new").exists() and (tmp_path / "new").resolve() not in rundir.held_locks()
    with pytest.raises(UserError, match="bad data"):  # and the parents it made for it
        claim_and_build(RunDir(tmp_path / "a" / "b" / "new"), RT(), False, Boom)
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()  # a folder that existed before is kept
    with pytest.raises(UserError, match="bad data"):
        claim_and_build(RunDir(tmp_path / "kept"), RT(), False, Boom)
    assert (tmp_path / "kept").is_dir() and (tmp_path / "kept").resolve() not in rundir.held_locks()


def test_the_same_tensors_and_metadata_are_the_same_file_bytes(tmp_path):
    """safetensors writes the metadata in a random order on each save (a Rust HashMap): the teacher backbone of
    a run killed and resumed, equal bit for bit, had another file hash (its identity) than the uninterrupted
    run's (for 3 keys, 5 saves in 6). Now the metadata is in key order: the same bytes, read back as written."""
    from safetensors import safe_open

    tensors = {"b": torch.arange(5.0), "a": torch.ones(2, 3, dtype=torch.bfloat16), "c": torch.zeros(0)}
    meta = {"method": "dino", "arch": "vit_tiny_patch16_224", "image_size": 16, "note": "é\n\"x\"", "z": ""}
    blobs = set()
    for i in range(12):
        save_tensors(tmp_path / f"w{i}.safetensors", tensors, meta)
        blobs.add((tmp_path / f"w{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    (blob,) = blobs
    n = int.from_bytes(blob[:8], "little")
    assert (8 + n) % 8 == 0 and blob[8:9] == b"{"
    with safe_open(str(tmp_path / "w0.safetensors"), "pt") as f:
        assert f.metadata() == {k: str(v) for k, v in meta.items()}
        assert all(torch.equal(f.get_tensor(k), v) for k, v in tensors.items()) and set(f.keys()) == set(tensors)
    save_tensors(tmp_path / "one.safetensors", tensors, {"format": "pt"})  # one key, or none: as safetensors wrote
    from safetensors.torch import save
    assert (tmp_path / "one.safetensors").read_bytes() == save(tensors, metadata={"format": "pt"})


def test_atomic_copy(tmp_path):
    from gensis.rundir import atomic_copy

    src = tmp_path / "a.bin"
    src.write_bytes(os.urandom(3 << 20))
    atomic_copy(src, tmp_path / "sub" / "b.bin")
    assert (tmp_path / "sub" / "b.bin").read_bytes() == src.read_bytes()
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]


def test_a_users_config_yaml_is_not_a_run_and_a_run_killed_before_its_config_resumes(tmp_path, monkeypatch):
    """The manifest is written before config.yaml, so a folder holding a config.yaml and no manifest is the user's
    (refused, untouched), and a run killed between the two writes resumes (nothing to compare)."""
    import gensis.config
    from gensis.train.resume import check_resume

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: own config\n")
    with pytest.raises(UserError, match="not empty and not a gensis run folder .*config.yaml"):
        RunDir(mine).start("pretrain", {"a": 1}, 0, {})
    assert (mine / "config.yaml").read_text() == "my: own config\n" and not (mine / "manifest.json").exists()

    def killed(*a, **k):
        raise KeyboardInterrupt

    run = RunDir(tmp_path / "run")
    with monkeypatch.context() as m:
        m.setattr(gensis.config, "dump", killed)
        with pytest.raises(KeyboardInterrupt):
            run.start("pretrain", {"a": 1}, 0, {"data": "d"})
    release_folder(run.path)
    assert run.exists() and not (run / "config.yaml").exists() and run.killed_before_config()
    check_resume(RunDir(run.path), "pretrain", {"a": 2}, {"data": "d"})  # nothing to compare
    with pytest.raises(UserError, match="holds a pretraining run, not an autoencoder run"):
        check_resume(RunDir(run.path), "eldm-ae", {"a": 2}, {"data": "d"})
    cfg = {"a": 2, "data": {}, "model": {}, "optim": {}, "train": {}}  # the sections a pretraining config has
    RunDir(run.path).start("pretrain", cfg, 0, {"data": "d"}, resume=True)
    assert RunDir(run.path).config() == cfg and not RunDir(run.path).killed_before_config()
    release_folder(run.path)


def test_an_unfinished_run_with_a_checkpoint_is_not_restarted_without_resume(tmp_path):
    """Ctrl-C, then the same command again without --resume: one line asking for --resume; the checkpoint and the
    log stay (a fresh start overwrote both)."""
    from gensis.train.loop import CHECKPOINT, claim_and_build

    class Built:
        stage = "pretrain"

    class RT:
        is_main = True

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.start("pretrain", {"a": 1}, 0, {"data": "d"})
    save_tensors(run / CHECKPOINT, {"w": torch.ones(2)})
    (run / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
    release_folder(run.path)
    before = {p.name: p.read_bytes() for p in run.path.iterdir()}
    with pytest.raises(UserError, match="unfinished run with a checkpoint .*--resume"):
        claim_and_build(RunDir(run.path), RT(), False, Built)
    assert {p.name: p.read_bytes() for p in run.path.iterdir()} == before  # nothing changed, lock released
    assert isinstance(claim_and_build(RunDir(run.path), RT(), True, Built), Built)
    release_folder(run.path)
    (run / CHECKPOINT).unlink()  # killed before its first checkpoint: nothing to lose, it starts over
    assert isinstance(claim_and_build(RunDir(run.path), RT(), False, Built), Built)
    release_folder(run.path)
