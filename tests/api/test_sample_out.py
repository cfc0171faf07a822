"""`gensis eldm sample --out DIR` writes only into a folder it wrote before (or a new/empty one): never into a
user's folder, e.g. a class folder of their own images (whose files of the same name it overwrote)."""

from __future__ import annotations

import numpy as np
from PIL import Image

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
