"""`gensis export RUN --to timm|safetensors`: timm loads the encoder without gensis and gives the same features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gensis.cli.main import main


def _images(n: int = 6, size: int = 16) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_timm_folder_loads_without_gensis_and_gives_the_same_features(encoder_run, tmp_path, without_gensis):
    from gensis.models.encoder import load_encoder

    out = tmp_path / "vit"
    assert main(["export", str(encoder_run), "--to", "timm", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "vit_tiny_patch16_224" and cfg["num_classes"] == 0
    assert cfg["model_args"]["patch_size"] == 4 and cfg["model_args"]["depth"] == 2  # the preset's overrides
    assert cfg["pretrained_cfg"]["input_size"] == [3, 16, 16]
    imgs = _images()
    np.save(tmp_path / "images.npy", imgs)
    without_gensis(f"""
import numpy as np, timm, torch
from PIL import Image
m = timm.create_model("local-dir:{out}", pretrained=True).eval()
tf = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=m))
x = torch.stack([tf(Image.fromarray(a)) for a in np.load("images.npy")])
with torch.no_grad():
    np.save("timm_features.npy", m(x).numpy())
""", tmp_path)
    theirs = torch.from_numpy(np.load(tmp_path / "timm_features.npy"))
    ours = load_encoder(str(encoder_run))(torch.from_numpy(imgs).permute(0, 3, 1, 2))
    assert theirs.shape == ours.shape == (6, 32)
    assert torch.allclose(theirs, ours, atol=1e-5), (theirs - ours).abs().max()
    # a different backbone (the student) gives other features: the comparison can fail
    student = load_encoder(str(encoder_run), "student")(torch.from_numpy(imgs).permute(0, 3, 1, 2))
    assert not torch.allclose(theirs, student, atol=1e-3)


def test_plain_state_dict(encoder_run, tmp_path):
    import timm
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = tmp_path / "enc.safetensors"
    assert main(["export", str(encoder_run), "--to", "safetensors", str(path), "--which", "student"]) == 0
    with safe_open(str(path), "pt") as f:
        cfg = json.loads(f.metadata()["timm_config"])
    m = timm.create_model(cfg["architecture"], num_classes=0, **cfg["model_args"])
    m.load_state_dict(load_file(str(path)))  # strict: every key matches
    ref = load_file(str(encoder_run / "student_backbone.safetensors"))
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in ref.items())


def test_export_refuses_an_existing_folder_and_a_non_run(encoder_run, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep me")
    assert main(["export", str(encoder_run), "--to", "timm", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "taken" / "x").read_text() == "keep me"
    assert main(["export", str(tmp_path), "--to", "timm", str(tmp_path / "o")]) == 2
    assert "teacher_backbone" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_eldm_run_exports_its_conditioning_encoder(vq_eldm_run, encoder_run, tmp_path):
    from gensis.export import export

    out = export(vq_eldm_run, "safetensors", tmp_path / "e.safetensors")
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(out))["cls_token"],
                       load_file(str(encoder_run / "teacher_backbone.safetensors"))["cls_token"])
    with pytest.raises(Exception, match="unknown export format"):
        export(vq_eldm_run, "onnx", tmp_path / "x")


def test_layer_scale_is_rebuilt_by_timm(tmp_path, without_gensis):
    """``model.init_values`` (DINOv2's LayerScale) reaches the timm folder: timm rebuilds the ``ls1``/``ls2``
    gammas, loads them strictly and gives gensis' features."""
    from safetensors.torch import load_file

    from gensis.models.encoder import load_encoder
    from gensis.rundir import save_tensors
    from tiny_runs import make_encoder_run

    run = make_encoder_run(tmp_path / "ls", overrides=("model.init_values=1e-5",))
    path = run / "teacher_backbone.safetensors"
    tensors = load_file(str(path))
    gammas = [k for k in tensors if k.endswith(("ls1.gamma", "ls2.gamma"))]
    assert len(gammas) == 4 and torch.allclose(tensors[gammas[0]], torch.full_like(tensors[gammas[0]], 1e-5))
    g = torch.Generator().manual_seed(0)
    for k in gammas:  # trained-looking gains, so that dropping them would change the features
        tensors[k] = torch.rand(tensors[k].shape, generator=g) + 0.5
    save_tensors(path, tensors)

    out = tmp_path / "vit"
    assert main(["export", str(run), "--to", "timm", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model_args"]["init_values"] == pytest.approx(1e-5)
    imgs = _images()
    np.save(tmp_path / "images.npy", imgs)
    without_gensis(f"""
import numpy as np, timm, torch
from PIL import Image
m = timm.create_model("local-dir:{out}", pretrained=True).eval()
assert float(m.blocks[0].ls1.gamma[0]) != 1e-5
tf = timm.data.create_transform(**timm.data.resolve_data_config({{}}, model=m))
x = torch.stack([tf(Image.fromarray(a)) for a in np.load("images.npy")])
with torch.no_grad():
    np.save("timm_features.npy", m(x).numpy())
""", tmp_path)
    theirs = torch.from_numpy(np.load(tmp_path / "timm_features.npy"))
    ours = load_encoder(str(run))(torch.from_numpy(imgs).permute(0, 3, 1, 2))
    assert torch.allclose(theirs, ours, atol=1e-5), (theirs - ours).abs().max()


def test_plain_state_dict_never_replaces_a_file(encoder_run, tmp_path, capsys):
    """`gensis export RUN --to safetensors RUN/teacher_backbone.safetensors` replaced the run's own weights (or
    another run's): an existing file is refused in one line, as the timm and diffusers exports refuse a folder."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(encoder_run, run)
    target = run / "teacher_backbone.safetensors"
    before = target.read_bytes()
    assert main(["export", str(run), "--to", "safetensors", str(target), "--which", "student"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err
    assert target.read_bytes() == before


def test_a_killed_export_leaves_a_staging_folder_the_next_export_removes(encoder_run, tmp_path, capsys):
    """A kill during `gensis export` left its hidden staging folder (``.gensis-tmp-OUT.*.tmp``) for ever: the next
    export into that folder removes the staging folders of dead gensis processes (the marker and a dead pid in the
    name), and nothing else: a live process's staging folder, a marked name without a pid, a user's look-alike."""
    import os
    import subprocess
    import sys

    out = tmp_path / "vit"
    killed = f"""
import os, sys
import gensis.export.to_timm as t
def die(src, folder):
    (folder / "model.safetensors").write_bytes(b"half")
    os._exit(9)  # as if killed mid-export: no cleanup runs
t.write_timm_folder = die
from gensis.cli.main import main
main(["export", {str(encoder_run)!r}, "--to", "timm", {str(out)!r}])
"""
    p = subprocess.Popen([sys.executable, "-c", killed], stderr=subprocess.PIPE, text=True)
    err = p.communicate(timeout=300)[1]
    assert p.returncode == 9, err[-2000:]
    stale = [q for q in tmp_path.iterdir() if q.name.startswith(".gensis-tmp-vit.")]
    assert len(stale) == 1 and stale[0].is_dir() and not out.exists()  # what the kill leaves
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        keep = [tmp_path / f".gensis-tmp-vit.{live.pid}-0123abcd.tmp",  # a running export's
                tmp_path / ".gensis-tmp-vit.a1b2c3d4.tmp",  # marked, but no pid: cannot be proved stale
                tmp_path / ".vit.12345-0123abcd.tmp",  # no marker
                tmp_path / "notes"]
        for d in keep:
            d.mkdir()
            (d / "x").write_text("keep me")
        link = tmp_path / f".gensis-tmp-vit.{p.pid}-feedbeef.tmp"  # a dead pid, but a link: never followed
        os.symlink(tmp_path / "notes", link)
        assert main(["export", str(encoder_run), "--to", "timm", str(out)]) == 0
    finally:
        live.kill()
        live.wait()
    assert not stale[0].exists() and str(stale[0]) in capsys.readouterr().err
    assert (out / "model.safetensors").stat().st_size > 1000
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder (mkdtemp's staging folder was 0700)
    assert all((d / "x").read_text() == "keep me" for d in keep) and link.is_symlink()
    left = {q.name for q in tmp_path.iterdir()}
    assert left == {"vit", link.name, *(d.name for d in keep)}


def test_an_older_versions_staging_folder_without_a_pid_is_removed_after_a_day_if_provably_an_export(tmp_path,
                                                                                                      capsys):
    """Older versions named the staging folder with mkdtemp (no pid): a kill left it for ever. The next export
    removes it when its name has that shape, it holds only what an export writes (the unmarked shape: with a file
    only a gensis export writes) and nothing in it changed for a day; anything else is kept."""
    import json
    import os
    import time

    from gensis.export.atomic import OLD_STAGING_AGE_S, staged_folder

    timm_cfg = json.dumps({"architecture": "vit_tiny_patch16_224", "pretrained_cfg": {"tag": "gensis-teacher"}})
    users_cfg = json.dumps({"architecture": "vit_tiny_patch16_224", "pretrained_cfg": {"tag": "augreg_in21k"}})
    pipe = json.dumps({"_class_name": "EmbeddingConditionedPipeline"})
    folders = {  # name: ({relative path: content}, removed?)
        ".gensis-tmp-vit.a1b2c3d4.tmp": ({"model.safetensors": "half"}, True),  # marked, killed mid-export
        ".gensis-tmp-vit.k9_x2m0q.tmp": ({}, True),  # marked, killed before it wrote
        ".vit.ab12cd34.tmp": ({"config.json": timm_cfg, "model.safetensors": "w"}, True),  # unmarked timm export
        ".pipe.zz9yy8xx.tmp": ({"model_index.json": pipe, "unet/config.json": "{}",
                                "unet/diffusion_pytorch_model.safetensors": "w"}, True),  # unmarked diffusers export
        ".gensis-tmp-a.qq11ww22.tmp": ({"notes.txt": "keep me"}, False),  # a file no export writes
        ".backup.20240101.tmp": ({"config.json": users_cfg, "model.safetensors": "w"}, False),  # a user's model
        ".gensis-tmp-b.ee33rr44.tmp": ({"x/y/config.json": "{}"}, False),  # deeper than an export
        ".gensis-tmp-c.tt55yy66.tmp": ({"model.safetensors": "w"}, False),  # changed recently (below)
        ".gensis-tmp-d.uu77ii88.tmp": ({"unet/config.json": "{}"}, False),  # a file in it changed recently (below)
    }
    old = time.time() - OLD_STAGING_AGE_S - 600
    for name, (files, _) in folders.items():
        d = tmp_path / name
        d.mkdir()
        for rel, text in files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_text(text)
        for p in sorted(d.rglob("*"), key=lambda q: -len(q.parts)) + [d]:  # deepest first: a folder's own last
            os.utime(p, (old, old))
    os.utime(tmp_path / ".gensis-tmp-c.tt55yy66.tmp")
    os.utime(tmp_path / ".gensis-tmp-d.uu77ii88.tmp" / "unet" / "config.json")
    link = tmp_path / ".gensis-tmp-e.oo99pp00.tmp"  # a link of that shape (to a user's model): never followed
    link.symlink_to(tmp_path / ".backup.20240101.tmp")
    with staged_folder(tmp_path / "out") as d:
        (d / "config.json").write_text("{}")
    err = capsys.readouterr().err
    for name, (_, removed) in folders.items():
        assert (tmp_path / name).exists() != removed, name
        assert (str(tmp_path / name) in err) == removed, (name, err)
    assert link.is_symlink() and (tmp_path / "out" / "config.json").is_file()
    assert (tmp_path / ".backup.20240101.tmp" / "model.safetensors").read_text() == "w"


def test_an_out_that_is_a_link_to_a_folder_elsewhere_gets_the_export(encoder_run, tmp_path, capsys):
    """`export RUN --to timm OUT` with OUT a symbolic link to an empty folder (on another disk, say) did all the work
    and then failed with 'cannot make the folder OUT: part of that path is a file'; a link to a folder not made yet
    was replaced by a real folder (the export on the link's disk, the link gone). Both now export into the link's
    target, the link kept; a link to a folder that is not empty is refused, named as given."""
    disk = tmp_path / "disk"
    (disk / "empty").mkdir(parents=True)
    (disk / "full").mkdir()
    (disk / "full" / "notes.txt").write_text("keep me")
    links = {"to-empty": disk / "empty", "to-new": disk / "new" / "vit", "to-full": disk / "full"}
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
    for name in ("to-empty", "to-new"):
        assert main(["export", str(encoder_run), "--to", "timm", str(tmp_path / name)]) == 0, capsys.readouterr().err
        assert (tmp_path / name).is_symlink() and (links[name] / "config.json").is_file()
        assert (links[name] / "model.safetensors").is_file()
    capsys.readouterr()
    assert main(["export", str(encoder_run), "--to", "timm", str(tmp_path / "to-full")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"gensis: error: {tmp_path / 'to-full'} already exists; choose another output folder or remove it"
    assert sorted(p.name for p in (disk / "full").iterdir()) == ["notes.txt"]
    assert not [p for p in disk.rglob(".gensis-tmp-*")] and not [p for p in tmp_path.glob(".gensis-tmp-*")]


def test_a_folder_filled_while_the_export_ran_is_kept_and_named(tmp_path, capsys):
    """Two exports to one OUT at once: the second to finish found OUT filled by the first and stopped with an
    OSError traceback (Directory not empty); now one line, the first export's folder kept, no staging left."""
    from gensis.errors import UserError
    from gensis.export.atomic import staged_folder

    out = tmp_path / "out"
    with pytest.raises(UserError, match="was filled while this export ran"):
        with staged_folder(out) as d:
            (d / "config.json").write_text("second")
            out.mkdir()  # the other export (or the user) finished meanwhile
            (out / "config.json").write_text("first")
    assert (out / "config.json").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_full_disk_or_a_refused_folder_names_the_out_given_not_the_staging_folder(encoder_run, tmp_path,
                                                                                     monkeypatch, capsys):
    """'cannot write ro/.gensis-tmp-vit.123@host-ab12cd34.tmp: Permission denied' named our temporary folder; a
    full disk, the weights file inside it. The line now names OUT as given (and the file in it); nothing is left."""
    import errno
    import os
    from pathlib import Path

    import gensis.export.to_timm as to_timm

    out = tmp_path / "vit"
    real_mkdir = Path.mkdir

    def refused(self, *a, **kw):
        if self.name.startswith(".gensis-tmp-vit."):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *a, **kw)

    monkeypatch.setattr(Path, "mkdir", refused)
    assert main(["export", str(encoder_run), "--to", "timm", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gensis: error: cannot write {out}: Permission denied ("), err
    monkeypatch.setattr(Path, "mkdir", real_mkdir)

    def disk_full(path, *a, **kw):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(to_timm, "save_tensors", disk_full)
    assert main(["export", str(encoder_run), "--to", "timm", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gensis: error: cannot write {out / 'model.safetensors'}: No space left on device ("), err
    assert not list(tmp_path.iterdir())
