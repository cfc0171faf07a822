"""A run folder or an image folder whose name is not UTF-8 (Latin-1 `café/` from an old share, which Python holds
as a str with surrogate escapes): pretraining wrote it, but nothing read it back. `eval knn --encoder café`,
`export café` and a resume failed with "Path ... is not valid UTF-8" (safetensors opens UTF-8 names only), and
`eval knn --train imgé/` was a UnicodeEncodeError traceback (the feature cache key), and so was printing the
result line naming such a folder under a UTF-8 locale (whose stdout is strict)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from gensis.cli.main import main

pytestmark = pytest.mark.skipif(os.name == "nt", reason="file names are not bytes on Windows")


def test_a_latin1_run_folder_is_read_by_eval_export_and_resume(tmp_path, encoder_run, images_npz, capsysbinary):
    from gensis.checkpoint import load_checkpoint, save_checkpoint
    from gensis.rundir import load_tensors

    run = tmp_path / os.fsdecode(b"caf\xe9")
    shutil.copytree(encoder_run, run)
    assert main(["eval", "knn", "--encoder", str(run), "--train", str(images_npz), "--cache",
                 str(tmp_path / os.fsdecode(b"cache\xe9")), "--quiet", "--threads", "1"]) == 0, capsysbinary.readouterr().err
    assert main(["eval", "knn", "--encoder", str(run), "--train", str(images_npz), "--cache",
                 str(tmp_path / os.fsdecode(b"cache\xe9")), "--quiet", "--threads", "1"]) == 0  # from the cache
    out = capsysbinary.readouterr().out
    assert b"encoder: " + os.fsencode(run) in out, out  # the name's own bytes, as `ls` prints it
    assert main(["export", str(run), "--to", "timm", str(tmp_path / "vit")]) == 0, capsysbinary.readouterr().err
    assert set(load_tensors(tmp_path / "vit" / "model.safetensors")) == set(load_tensors(
        run / "teacher_backbone.safetensors"))
    import torch

    lin = torch.nn.Linear(2, 1)
    save_checkpoint(run / "checkpoint.safetensors", {"lin": lin}, {}, meta={"epoch": 0})
    tensors, info = load_checkpoint(run / "checkpoint.safetensors")  # what --resume reads
    assert info["meta"]["epoch"] == 0 and any(torch.equal(t, lin.weight.detach()) for t in tensors.values())


def test_a_latin1_image_folder_is_evaluated(tmp_path, capsysbinary):
    data = tmp_path / os.fsdecode(b"im\xe9")
    rng = np.random.default_rng(0)
    for c in ("a", os.fsdecode(b"b\xe9")):
        (data / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(data / c / f"{i}.png")
    assert main(["eval", "knn", "--encoder", "pixels", "--train", str(data), "--k", "1", "--quiet",
                 "--cache", str(tmp_path / "cache")]) == 0, capsysbinary.readouterr().err
