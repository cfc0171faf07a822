"""`gensis eldm sample --out DIR` writes only into a folder it wrote before (or a new/empty one): never into a
user's folder, e.g. a class folder of their own images (whose files of the same name it overwrote)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cli_asserts import check_second_run_refused

from gensis.cli.main import main
from gensis.folder_kind import folder_kind


def _class_folder(root):
    d = root / "imgs" / "cat"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("generative.png", "1.png"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(d / name)
    return d


def _listing(d):
    return {p.name: p.read_bytes() for p in d.iterdir()}


def test_sample_refuses_a_users_folder_in_one_line(tmp_path, images_npz, pixel_eldm_run, capsys):
    user = _class_folder(tmp_path)
    before = _listing(user)
    assert main(["eldm", "sample", "--eldm", str(pixel_eldm_run), "--data", str(images_npz), "--out", str(user),
                 "--device", "cpu"]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and "is not empty and not an E-LDM figures folder" in err[0], err
    assert _listing(user) == before  # nothing written, nothing replaced


def test_sample_writes_a_new_folder_and_its_own_again(tmp_path, images_npz, pixel_eldm_run, capsys):
    out = tmp_path / "fig"
    out.mkdir()  # empty: fine
    argv = ["eldm", "sample", "--eldm", str(pixel_eldm_run), "--data", str(images_npz), "--out", str(out),
            "--device", "cpu", "--steps", "2", "figures.rows=2", "figures.per_image=1", "figures.pairs=1"]
    assert main(argv) == 0
    assert folder_kind(out) == "eldm-figures" and (out / "generative.png").is_file()
    assert main(argv) == 0  # its own earlier output
    (out / "figures.json").unlink()  # written before the marker existed: exactly its two PNG files
    assert main(argv) == 0


def test_two_samples_on_one_out_the_second_is_refused(tmp_path, images_npz, pixel_eldm_run, capsys, monkeypatch):
    """Two `gensis eldm sample` on the same --out were not locked against each other (their PNG writes could
    interleave): the second is refused in one line (exit 2), before loading anything when the folder exists, else
    when it comes to write (the first made the folder meanwhile); nothing of the first's is touched."""
    import gensis.eldm.model as model

    argv = ["eldm", "sample", "--eldm", str(pixel_eldm_run), "--data", str(images_npz), "--device", "cpu",
            "--steps", "2", "figures.rows=2", "figures.per_image=1", "figures.pairs=1", "--out"]
    check_second_run_refused(main, argv, tmp_path / "fig", tmp_path / "new", capsys, monkeypatch, model,
                             "load_generator")


def test_a_killed_samples_temporary_png_is_removed_by_the_rerun(tmp_path, images_npz, pixel_eldm_run):
    """A kill while `eldm sample` wrote a PNG left its marked temporary file in --out for ever: the rerun removes
    it (its pid is gone), never a live process's."""
    import os

    out = tmp_path / "fig"
    out.mkdir()
    dead = out / f".gensis-tmp-generative.png.{2 ** 22 + 777}-0123abcd.tmp"  # above any default pid_max
    live = out / f".gensis-tmp-generative.png.{os.getppid()}-0123abcd.tmp"
    dead.write_bytes(b"half")
    live.write_bytes(b"being written")
    assert main(["eldm", "sample", "--eldm", str(pixel_eldm_run), "--data", str(images_npz), "--out", str(out),
                 "--device", "cpu", "--steps", "2", "figures.rows=2", "figures.per_image=1", "figures.pairs=1"]) == 0
    assert not dead.exists() and live.read_bytes() == b"being written" and (out / "generative.png").is_file()


def test_a_sample_failing_before_its_first_file_leaves_no_empty_out(tmp_path, images_npz, pixel_eldm_run, capsys,
                                                                     monkeypatch):
    """`eldm sample` makes --out when it comes to write: failing at its first file (a full disk) left the empty
    folder (and the parents made for it) behind. Now they go; a folder that existed before is kept."""
    import errno

    import gensis.rundir as rundir

    def full_disk(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rundir, "atomic_write_json", full_disk)  # figures.json, its first file
    argv = ["eldm", "sample", "--eldm", str(pixel_eldm_run), "--data", str(images_npz), "--device", "cpu",
            "--steps", "2", "figures.rows=2", "figures.per_image=1", "figures.pairs=1", "--out"]
    assert main([*argv, str(tmp_path / "new" / "fig")]) != 0
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert main([*argv, str(tmp_path / "empty")]) != 0
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())
