"""gensis eval davis: label propagation equals DINO's dense formulation; end to end on a tiny DAVIS folder."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from davis_fixture import make_davis  # noqa: E402

from gensis.cli.main import main  # noqa: E402
from gensis.eval.davis import frame_size, propagate  # noqa: E402


def _dino_label_propagation(feat_tar, feat_sources, segs, h, w, radius, topk, temperature):
    """DINO's label_propagation written densely, as in eval_video_segmentation.py (mask of (h·w)²)."""
    import torch.nn.functional as F

    feat_tar = F.normalize(feat_tar, dim=1, p=2)  # (h·w, D)
    feat_sources = F.normalize(feat_sources, dim=1, p=2)  # (M, D, h·w)
    ncontext = feat_sources.shape[0]
    feat_tar = feat_tar.unsqueeze(0).repeat(ncontext, 1, 1)
    aff = torch.exp(torch.bmm(feat_tar, feat_sources) / temperature)
    mask = torch.zeros(h, w, h, w)
    for i in range(h):
        for j in range(w):
            for p in range(2 * radius + 1):
                for q in range(2 * radius + 1):
                    if 0 <= i - radius + p < h and 0 <= j - radius + q < w:
                        mask[i, j, i - radius + p, j - radius + q] = 1
    aff = aff * mask.reshape(h * w, h * w).unsqueeze(0)
    aff = aff.transpose(2, 1).reshape(-1, h * w)
    tk_val, _ = torch.topk(aff, dim=0, k=topk)
    tk_val_min, _ = torch.min(tk_val, dim=0)
    aff[aff < tk_val_min] = 0
    aff = aff / torch.sum(aff, keepdim=True, axis=0)
    nmb, C = segs.shape[:2]
    segs = segs.reshape(nmb, C, -1).transpose(2, 1).reshape(-1, C).T
    return torch.mm(segs, aff).reshape(C, h, w)


@pytest.mark.parametrize("radius", [0, 2])
def test_propagation_equals_dino_dense(radius):
    g = torch.Generator().manual_seed(0)
    h, w, d, m, c = 5, 7, 6, 3, 3
    tgt = torch.randn(h, w, d, generator=g)
    src = torch.randn(m, h, w, d, generator=g)
    labels = torch.rand(m, c, h, w, generator=g)
    ours = propagate(tgt, src, labels, radius=radius, topk=4, temperature=0.1, chunk=8)
    ref = _dino_label_propagation(tgt.reshape(-1, d), src.reshape(m, -1, d).transpose(1, 2), labels, h, w,
                                  radius if radius > 0 else max(h, w), 4, 0.1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_frame_size_as_dino():
    assert frame_size(480, 854) == (480, 832)
    assert frame_size(854, 480) == (832, 480)


def test_davis_end_to_end(tmp_path, capsys):
    root = make_davis(tmp_path / "DAVIS")
    out, js = tmp_path / "pred", tmp_path / "davis.json"
    rc = main(["eval", "davis", "--encoder", "pixels", "--data", str(root), "--out", str(out), "--size", "48",
               "--radius", "3", "--json", str(js)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "J&F-Mean" in text and "squares" in text and "pair" in text
    res = json.loads(js.read_text())
    assert [s["objects"] for s in res["sequences"]] == [1, 2]
    assert res["JF"] > 0.6  # the squares are tracked (scored on frames 1..4, as the toolkit)
    pred = Image.open(out / "pair" / "00003.png")
    assert pred.mode == "P" and pred.size == (64, 48)
    assert set(np.unique(np.array(pred))) <= {0, 1, 2} and (np.array(pred) == 2).sum() > 50
    assert Image.open(out / "pair-overlay.png").size[1] == 400  # prediction row over ground-truth row


@pytest.mark.parametrize("remove,msg", [("ImageSets", "ImageSets/2017/val.txt"),
                                        ("Annotations/480p/pair/00000.png", "first-frame annotation"),
                                        ("JPEGImages/480p/pair", "frame folder")])
def test_davis_wrong_layout_is_one_line(tmp_path, capsys, remove, msg):
    import shutil

    root = make_davis(tmp_path / "DAVIS", frames=2)
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert main(["eval", "davis", "--encoder", "pixels", "--data", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]


def test_davis2016_grey_masks_are_one_object(tmp_path):
    from gensis.eval.davis import read_annotation

    m = np.zeros((6, 8), np.uint8)
    m[2:4, 2:5] = 255
    Image.fromarray(m, mode="L").save(tmp_path / "a.png")
    lab, pal = read_annotation(tmp_path / "a.png")
    assert pal is None and lab.max() == 1 and lab.sum() == 6


def test_davis_out_never_overwrites_files_it_did_not_write(tmp_path, capsys):
    """--out inside the DAVIS folder (its Annotations/480p: the ground truth, under the predictions' names) or a
    non-empty folder of other files is refused in one line before any work; its own folder is written again."""
    root = make_davis(tmp_path / "DAVIS", sequences=("squares",), frames=3)
    gt = root / "Annotations" / "480p"
    before = {p: p.read_bytes() for p in gt.rglob("*.png")}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    argv = ["eval", "davis", "--encoder", "pixels", "--data", str(root), "--size", "48", "--radius", "3", "--out"]
    for out, msg in ((gt, "inside the DAVIS folder"), (root, "inside the DAVIS folder"), (mine, "not empty")):
        assert main(argv + [str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    assert {p: p.read_bytes() for p in gt.rglob("*.png")} == before and sorted(os.listdir(mine)) == ["notes.txt"]
    pred = tmp_path / "pred"
    for _ in range(2):  # its own folder: written again
        assert main(argv + [str(pred)]) == 0
    assert (pred / "squares" / "00002.png").is_file() and (pred / "davis-predictions.json").is_file()
    (pred / "davis-predictions.json").unlink()  # written before the marker existed: strips and their PNG folders
    assert main(argv + [str(pred)]) == 0
    import subprocess

    code = "import sys; from gensis.rundir import temp_path; temp_path(sys.argv[1]).write_bytes(b'x')"
    subprocess.run([sys.executable, "-c", code, str(pred / "squares" / "00001.png")], check=True)  # a killed run's
    assert main(argv + [str(pred)]) == 0
    assert sorted(os.listdir(pred / "squares")) == ["00000.png", "00001.png", "00002.png"]


@pytest.mark.parametrize("resize", ["JPEGImages/480p/squares/00002.jpg", "Annotations/480p/squares/00000.png"])
def test_davis_frames_of_another_size_are_one_line(tmp_path, capsys, resize):
    """A frame of another size than its sequence's first was a RuntimeError traceback from the propagation (a
    different patch grid); a first-frame annotation of another size was silently resized (other numbers)."""
    root = make_davis(tmp_path / "DAVIS", sequences=("squares",), frames=4)
    path = root / resize
    with Image.open(path) as im:
        im.resize((32, 48)).save(path)
    assert main(["eval", "davis", "--encoder", "pixels", "--data", str(root), "--size", "48", "--radius", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{path} is 32×48, its first frame 00000.jpg 64×48" in err[0], err


def test_davis_progress_bar_counts_every_frame_of_every_sequence(tmp_path, capsys, monkeypatch):
    """One bar per sequence gave no ETA for the whole evaluation (30 sequences at 480 px take long on a CPU): one
    bar over all propagated frames."""
    monkeypatch.delenv("GENSIS_NO_PROGRESS", raising=False)
    root = make_davis(tmp_path / "DAVIS", sequences=("squares", "pair"), frames=3)
    assert main(["eval", "davis", "--encoder", "pixels", "--data", str(root), "--size", "48", "--radius", "3"]) == 0
    err = capsys.readouterr().err
    assert "DAVIS frames" in err and "/4" in err  # (3 - 1) frames x 2 sequences


def test_davis_frames_of_fewer_patches_than_topk_are_one_line(tmp_path, capsys):
    """A small --size left the first frame fewer patches than --topk: torch's 'selected index k out of range'
    traceback from the propagation."""
    root = make_davis(tmp_path / "DAVIS", sequences=("squares",), frames=3)
    assert main(["eval", "davis", "--encoder", "pixels", "--data", str(root), "--size", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fewer than --topk 5: use a larger --size" in err[0], err


def test_davis_out_under_a_file_is_refused_before_the_encoder_opens(tmp_path, capsys):
    """--out under a file failed when the first prediction was written; now before any work."""
    root = make_davis(tmp_path / "DAVIS", sequences=("squares",), frames=3)
    blocked = tmp_path / "notes.txt"
    blocked.write_text("x")
    assert main(["eval", "davis", "--encoder", str(tmp_path / "no-run"), "--data", str(root), "--out",
                 str(blocked / "pred")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out {blocked / 'pred'} cannot be written: {blocked} is a file" in err[0], err


def test_davis_object_ids_not_1_to_n_are_one_line(tmp_path, capsys):
    """A first frame with objects 1 and 3: object 2, absent from every frame, was scored J = F = 1 (empty ground
    truth, empty prediction) and raised J&F without a word; now one line before any work."""
    root = make_davis(tmp_path / "DAVIS", sequences=("squares", "pair"), frames=3)
    for png in sorted((root / "Annotations" / "480p" / "pair").glob("*.png")):
        im = Image.open(png)
        lab = np.array(im)
        lab[lab == 2] = 3
        m = Image.fromarray(lab, mode="P")
        m.putpalette(im.getpalette())
        m.save(png)
    assert main(["eval", "davis", "--encoder", "pixels", "--data", str(root), "--size", "48", "--radius", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sequence 'pair'" in err[0] and "object ids 1, 3, without 2" in err[0], err


def test_propagation_small_temperature_does_not_overflow():
    """--temperature 0.005: exp(cos / T) overflowed float32 (inf, then NaN soft labels and arbitrary masks, a wrong
    J&F without a word); the result now equals DINO's propagation computed in float64, where it does not overflow."""
    g = torch.Generator().manual_seed(0)
    h, w, d, m, c = 5, 7, 6, 3, 3
    tgt = torch.randn(h, w, d, generator=g)
    src = torch.randn(m, h, w, d, generator=g)
    labels = torch.rand(m, c, h, w, generator=g)
    ours = propagate(tgt, src, labels, radius=2, topk=4, temperature=0.005, chunk=8)
    ref = _dino_label_propagation(tgt.reshape(-1, d).double(), src.reshape(m, -1, d).transpose(1, 2).double(),
                                  labels.double(), h, w, 2, 4, 0.005)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=1e-5)


def test_a_macs_appledouble_files_are_not_frames(tmp_path):
    """A DAVIS folder copied from a Mac holds ._00000.jpg files (AppleDouble metadata, not JPEGs); they were
    listed as frames, first of all ('first-frame annotation ._00000.png is missing'); hidden files are skipped
    now, as in every gensis data folder."""
    from gensis.eval.davis import davis_layout, sequence_files

    root = make_davis(tmp_path / "davis", sequences=("squares",), frames=3)
    seq = root / "JPEGImages" / "480p" / "squares"
    (seq / "._00000.jpg").write_bytes(b"\0\x05\x16\x07Mac OS X")
    frames, anns = sequence_files(davis_layout(root), "squares")
    assert [f.name for f in frames] == ["00000.jpg", "00001.jpg", "00002.jpg"] and all(anns)
