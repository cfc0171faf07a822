"""`gensis wsi tile|embed|export` on bad options: one line, exit 2, no traceback, nothing written."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("openslide")
pytest.importorskip("h5py")

from wsi_slides import make_svs, slide_image  # noqa: E402

from cli_asserts import check_second_run_refused  # noqa: E402

from gensis.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def tiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("wsi-inputs")
    slide = make_svs(d / "s.svs", slide_image(512, 384, [(64, 64, 320, 256)]), mpp=0.5, downsamples=(1, 2), tile=128)
    assert main(["wsi", "tile", str(slide), "--out", str(d / "T"), "--mag", "10", "--tile-size", "32",
                 "--quiet"]) == 0
    return d, slide


def _one_line(capsys, *words):
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("gensis: error:") and "Traceback" not in err[0], err
    for w in words:
        assert w in err[0], err[0]


def test_bad_numbers_are_one_line(tiled, tmp_path, capsys):
    """--mpp nan was a ValueError traceback; --thumb-size 0 a ZeroDivisionError named as the slide's failure;
    wsi embed --batch-size 0 / --workers -1 torch's ValueError tracebacks; tile --workers 0 was accepted."""
    d, slide = tiled
    capsys.readouterr()
    tile = ["wsi", "tile", str(slide), "--out", str(tmp_path / "T"), "--quiet"]
    for opt, val, words in [("--mpp", "nan", ("--mpp", "positive")), ("--mpp", "inf", ("--mpp",)),
                            ("--mag", "nan", ("--mag",)), ("--slide-mpp", "nan", ("--slide-mpp",)),
                            ("--thumb-size", "0", ("--thumb-size", ">= 1")), ("--thumb-size", "-5", ("--thumb-size",)),
                            ("--workers", "0", ("--workers", ">= 1"))]:
        assert main([*tile, opt, val]) == 2, (opt, val)
        _one_line(capsys, *words)
    assert not (tmp_path / "T").exists()
    embed = ["wsi", "embed", "--encoder", "pixels", "--tiles", str(d / "T"), "--out", str(tmp_path / "F"), "--quiet",
             "--device", "cpu"]
    for opt, val in [("--batch-size", "0"), ("--batch-size", "-2"), ("--workers", "-1")]:
        assert main([*embed, opt, val]) == 2, (opt, val)
        _one_line(capsys, opt)
    assert not (tmp_path / "F").exists()


def test_out_that_is_a_file_is_one_line(tiled, tmp_path, capsys):
    """--out naming a file: NotADirectoryError / FileExistsError tracebacks from mkdir; now one line naming it,
    exit 2, the file untouched."""
    d, slide = tiled
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    capsys.readouterr()
    for argv in (["wsi", "tile", str(slide), "--out", str(f), "--quiet"],
                 ["wsi", "embed", "--encoder", "pixels", "--tiles", str(d / "T"), "--out", str(f), "--quiet",
                  "--device", "cpu", "--workers", "0"],
                 ["wsi", "export", "--tiles", str(d / "T"), "--out", str(f), "--quiet"],
                 ["wsi", "export", "--tiles", str(d / "T"), "--out", str(f / "sub"), "--quiet"]):
        assert main(argv) == 2, argv
        _one_line(capsys, str(f), "cannot make the folder")
    assert f.read_text() == "keep me"


def test_mpp_csv_and_slide_lists_that_are_not_text_are_one_line(tiled, tmp_path, capsys):
    """--mpp-csv or a slide list (.txt/.csv) that is not UTF-8 text was a UnicodeDecodeError traceback; a slide
    given two mpp values took the last silently; a short row of a slide list CSV was an AttributeError."""
    d, slide = tiled
    binary = b"\xff\xfe\x00\x01PK\x03\x04"
    cases = []
    for name, text, argv_tail, words in [
            ("m.csv", binary, lambda p: [str(slide), "--mpp-csv", str(p)], ("m.csv", "not a UTF-8 text file")),
            ("two.csv", b"slide,mpp\ns,0.5\ns,0.25\n", lambda p: [str(slide), "--mpp-csv", str(p)],
             ("two.csv:3", "listed again")),
            ("list.txt", binary, lambda p: [str(p)], ("list.txt", "not a UTF-8 text file")),
            ("list.csv", binary, lambda p: [str(p)], ("list.csv", "not a UTF-8 text file"))]:
        p = tmp_path / name
        p.write_bytes(text)
        cases.append((p, argv_tail(p), words))
    capsys.readouterr()
    for p, tail, words in cases:
        assert main(["wsi", "tile", *tail, "--out", str(tmp_path / "T"), "--quiet"]) == 2, p
        _one_line(capsys, *words)
    assert not (tmp_path / "T").exists()
    lst = tmp_path / "slides.csv"  # Excel's CSV UTF-8 (BOM), a short row
    lst.write_bytes(f"\ufeffslide,note\n{slide},first\n\n{slide}\n".encode())
    assert main(["wsi", "tile", str(lst), "--out", str(tmp_path / "T"), "--mag", "10", "--tile-size", "32",
                 "--quiet"]) == 0


def test_a_killed_export_embed_or_tile_leaves_nothing_the_rerun_does_not_remove(tiled, tmp_path):
    """A kill during `wsi export` (or tile / embed) left its marked temporary file for ever; the rerun removes
    those whose pid is gone, never a live process's or a user's file."""
    import os
    import subprocess
    import sys

    d, slide = tiled
    out = tmp_path / "E"
    killed = f"""
import os
import gensis.rundir as r
r._commit = lambda tmp, path: os._exit(9)  # killed between writing a tile and renaming it into place
from gensis.cli.main import main
main(["wsi", "export", "--tiles", {str(d / "T")!r}, "--out", {str(out)!r}, "--quiet"])
"""
    p = subprocess.run([sys.executable, "-c", killed], capture_output=True, text=True, timeout=300)
    assert p.returncode == 9, p.stderr[-2000:]
    left = [q.name for q in out.iterdir()]
    assert len(left) == 1 and left[0].startswith(".gensis-tmp-")  # what the kill leaves
    live = os.getppid()  # a running process: its temporary file is kept
    dead = 2 ** 22 + 4321  # above any default pid_max: no such process
    keep = [out / f".gensis-tmp-x.png.{live}-0123abcd.tmp", out / "notes.tmp", out / ".x.png.12345-0123abcd.tmp"]
    for k in keep:
        k.write_text("keep me")
    assert main(["wsi", "export", "--tiles", str(d / "T"), "--out", str(out), "--quiet"]) == 0
    names = {q.name for q in out.iterdir()}
    assert left[0] not in names and {k.name for k in keep} <= names
    assert len([n for n in names if n.endswith(".png")]) > 0 and all(k.read_text() == "keep me" for k in keep)

    feats, tiles = tmp_path / "F", tmp_path / "T"
    assert main(["wsi", "embed", "--encoder", "pixels", "--tiles", str(d / "T"), "--out", str(feats), "--quiet",
                 "--device", "cpu", "--workers", "0"]) == 0
    assert main(["wsi", "tile", str(slide), "--out", str(tiles), "--mag", "10", "--tile-size", "32", "--quiet"]) == 0
    settings = next(tiles.iterdir())
    stale = [feats / f".gensis-tmp-s.h5.{dead}-0123abcd.tmp", settings / "patches" / f".gensis-tmp-s.h5.{dead}-1.tmp",
             settings / "thumbnails" / f".gensis-tmp-s.png.{dead}-0123abcd.tmp"]
    stale[1] = stale[1].with_name(f".gensis-tmp-s.h5.{dead}-89abcdef.tmp")
    for s in stale:
        s.write_bytes(b"half")
    assert main(["wsi", "embed", "--encoder", "pixels", "--tiles", str(d / "T"), "--out", str(feats), "--quiet",
                 "--device", "cpu", "--workers", "0"]) == 0
    assert main(["wsi", "tile", str(slide), "--out", str(tiles), "--mag", "10", "--tile-size", "32", "--quiet"]) == 0
    assert not any(s.exists() for s in stale)


def test_a_damaged_tiling_json_is_rewritten_and_a_concurrent_runs_slides_are_kept(tiled, tmp_path, capsys,
                                                                                  monkeypatch):
    """A damaged TILES/tiling.json was a JSONDecodeError (or TypeError) traceback on the next `wsi tile`; two
    `wsi tile` runs into one folder (a job array) each rewrote it from what they read at their start, dropping
    the other's slides."""
    import json

    import gensis.wsi.tiler as tiler

    d, slide = tiled
    argv = ["wsi", "tile", str(slide), "--out", str(tmp_path / "T"), "--mag", "10", "--tile-size", "32", "--quiet"]
    assert main(argv) == 0
    manifest = next((tmp_path / "T").iterdir()) / "tiling.json"
    for damage in ('{"slides": {', "[1, 2]", '{"slides": 3}'):
        manifest.write_text(damage)
        capsys.readouterr()
        assert main(argv) == 0, damage
        err = capsys.readouterr().err
        assert "tiling.json is damaged" in err and "Traceback" not in err
        assert json.loads(manifest.read_text())["slides"]["s"]["status"] in ("done", "skipped")
    tile_slide = tiler.tile_slide

    def another_run_finishes_meanwhile(*a, **kw):
        m = json.loads(manifest.read_text())
        m["slides"]["other"] = {"status": "done", "n_tiles": 7}
        manifest.write_text(json.dumps(m))
        return tile_slide(*a, **kw)

    monkeypatch.setattr(tiler, "tile_slide", another_run_finishes_meanwhile)
    assert main(argv) == 0
    assert set(json.loads(manifest.read_text())["slides"]) == {"s", "other"}


def test_embed_never_replaces_files_that_are_not_its_bags(tiled, tmp_path, capsys):
    """`wsi embed --out TILES/<settings>/patches` replaced every tile coordinate file with a bag (the tiling was
    gone), and any <slide>.h5 of the user's in --out likewise: refused in one line, nothing written; an earlier
    bag of this encoder is still kept (another encoder's: test_embed_refuses_an_out_of_another_encoders_bags)."""
    import shutil

    d, slide = tiled
    tiles = tmp_path / "T"
    shutil.copytree(d / "T", tiles)
    patches = next(tiles.iterdir()) / "patches"
    before = {p.name: p.read_bytes() for p in patches.iterdir()}
    embed = ["wsi", "embed", "--tiles", str(tiles), "--quiet", "--device", "cpu", "--workers", "0", "--encoder"]
    capsys.readouterr()
    assert main([*embed, "pixels", "--out", str(patches)]) == 2
    _one_line(capsys, "s.h5", "not a bag of tile embeddings", "gensis-tiles")
    assert {p.name: p.read_bytes() for p in patches.iterdir()} == before
    user = tmp_path / "mine"
    user.mkdir()
    (user / "s.h5").write_bytes(b"my own data")
    assert main([*embed, "pixels", "--out", str(user)]) == 2
    _one_line(capsys, "not a readable HDF5 file")
    assert (user / "s.h5").read_bytes() == b"my own data"
    docs = tmp_path / "docs"  # a folder of the user's without bags: the bags were added beside their files
    docs.mkdir()
    (docs / "notes.txt").write_text("mine")
    assert main([*embed, "pixels", "--out", str(docs)]) == 2
    _one_line(capsys, "is not empty and not a features folder (slide bags) (holds notes.txt)")
    assert sorted(q.name for q in docs.iterdir()) == ["notes.txt"]
    feats = tmp_path / "F"
    assert main([*embed, "pixels", "--out", str(feats)]) == 0
    assert main([*embed, "pixels", "--out", str(feats)]) == 0
    assert "0 slide(s), 1 already done" in capsys.readouterr().out


def test_embed_refuses_an_out_of_another_encoders_bags(tiled, tmp_path, capsys):
    """`wsi embed --encoder B --out FEATS` over FEATS of encoder A replaced A's bags one by one without a word (A's
    features lost; an interrupted run left a folder of two encoders). Now one line naming A, exit 2, A's bags
    untouched; B into another folder works."""
    d, _ = tiled
    embed = ["wsi", "embed", "--tiles", str(d / "T"), "--quiet", "--device", "cpu", "--workers", "0", "--encoder"]
    feats = tmp_path / "F"
    assert main([*embed, "pixels", "--out", str(feats)]) == 0
    before = {p.name: p.read_bytes() for p in feats.glob("*.h5")}
    capsys.readouterr()
    assert main([*embed, "random", "--out", str(feats)]) == 2
    _one_line(capsys, "another encoder, pixels", "s.h5", "--out")
    assert {p.name: p.read_bytes() for p in feats.glob("*.h5")} == before
    assert main([*embed, "random", "--out", str(tmp_path / "F-random")]) == 0


def test_embed_refuses_an_out_of_bags_from_another_tiling(tiled, tmp_path, capsys):
    """`wsi embed --tiles T/10x_... --out F` then `--tiles T/20x_... --out F` (same encoder) replaced the 10x bags
    with 20x ones without a word. Now one line, nothing written; a tiles folder moved since is embedded again."""
    import shutil

    d, slide = tiled
    assert main(["wsi", "tile", str(slide), "--out", str(tmp_path / "T"), "--mag", "5", "--tile-size", "32",
                 "--quiet"]) == 0
    other = next((tmp_path / "T").iterdir())
    embed = ["wsi", "embed", "--encoder", "pixels", "--quiet", "--device", "cpu", "--workers", "0", "--tiles"]
    feats = tmp_path / "F"
    assert main([*embed, str(d / "T"), "--out", str(feats)]) == 0
    before = (feats / "s.h5").read_bytes()
    capsys.readouterr()
    assert main([*embed, str(other), "--out", str(feats)]) == 2
    _one_line(capsys, "s.h5", "embedded from other tiles", "another --out")
    assert (feats / "s.h5").read_bytes() == before
    moved = tmp_path / "moved"
    shutil.copytree(d / "T", moved)
    shutil.copytree(feats, tmp_path / "F2")
    assert main([*embed, str(moved), "--out", str(tmp_path / "F2")]) == 0  # same tiles elsewhere: skipped


def test_embed_or_tile_into_another_gensis_folder_is_refused(tiled, tmp_path, capsys):
    """`wsi embed --out RUN` wrote the bags into a MIL run, a bank or a pretraining run, and `wsi tile --out RUN`
    its tiles folder. Now one line naming what the folder is; nothing written."""
    d, slide = tiled
    run = tmp_path / "mil"
    run.mkdir()
    (run / "mil.json").write_text("{}")
    capsys.readouterr()
    assert main(["wsi", "embed", "--encoder", "pixels", "--tiles", str(d / "T"), "--out", str(run), "--quiet",
                 "--device", "cpu", "--workers", "0"]) == 2
    _one_line(capsys, "is a MIL run")
    assert main(["wsi", "tile", str(slide), "--out", str(run), "--mag", "10", "--tile-size", "32", "--quiet"]) == 2
    _one_line(capsys, "is a MIL run")
    assert sorted(p.name for p in run.iterdir()) == ["mil.json"]


def test_bags_or_a_run_given_as_tiles_are_named_not_sent_to_wsi_tile(tiled, tmp_path, capsys):
    """`wsi export|embed --tiles FEATS` (the bags of `wsi embed`) said 'FEATS holds no tiles (no patches/ folder):
    run `gensis wsi tile SLIDES --out FEATS`', sending the tiles into the features folder; likewise a pretraining
    run. Now one line naming what the folder is."""
    d, _ = tiled
    feats = tmp_path / "feats"
    assert main(["wsi", "embed", "--encoder", "pixels", "--tiles", str(d / "T"), "--out", str(feats), "--quiet",
                 "--device", "cpu", "--workers", "0"]) == 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"stage": "pretrain", "status": "done"}))
    capsys.readouterr()
    for tiles, kind in ((feats, "is a features folder (slide bags), not a tiles folder"),
                        (run, "is a pretraining run, not a tiles folder")):
        assert main(["wsi", "export", "--tiles", str(tiles), "--out", str(tmp_path / "png"), "--quiet"]) == 2
        _one_line(capsys, kind, "`gensis wsi tile`")
        assert main(["wsi", "embed", "--encoder", "pixels", "--tiles", str(tiles), "--out", str(tmp_path / "f2"),
                     "--quiet", "--device", "cpu", "--workers", "0"]) == 2
        _one_line(capsys, kind)
    assert not (tmp_path / "png").exists() and not (tmp_path / "f2").exists()


def test_two_embeds_into_one_out_the_second_is_refused(tiled, tmp_path, capsys, monkeypatch):
    """`wsi embed` took no folder lock: two runs into one --out could interleave (and one removed the other's
    temporary bag files as stale). The second is refused in one line (exit 2), before the encoder is loaded when
    the folder exists, else when it comes to write; the first's bags are untouched; the lock is released when done."""
    import gensis.wsi.embed as we

    d, _ = tiled
    feats = tmp_path / "F"
    embed = ["wsi", "embed", "--encoder", "pixels", "--tiles", str(d / "T"), "--quiet", "--device", "cpu",
             "--workers", "0", "--out"]
    check_second_run_refused(main, embed, feats, tmp_path / "new", capsys, monkeypatch, we, "_encoder")


def test_a_refused_embed_leaves_no_empty_out(tmp_path, capsys):
    """`wsi embed` on tiles whose slide was moved away since tiling was refused when it came to read the tiles,
    after it had made --out: the empty folder (and the parents made for it) stayed. Now they go; a folder that
    existed before is kept."""
    slide = make_svs(tmp_path / "m.svs", slide_image(256, 256, [(32, 32, 200, 200)]), mpp=0.5, downsamples=(1, 2),
                     tile=128)
    tiles = tmp_path / "T"
    assert main(["wsi", "tile", str(slide), "--out", str(tiles), "--mag", "10", "--tile-size", "32", "--quiet"]) == 0
    slide.unlink()
    capsys.readouterr()
    embed = ["wsi", "embed", "--encoder", "pixels", "--tiles", str(tiles), "--quiet", "--device", "cpu",
             "--workers", "0", "--out"]
    assert main([*embed, str(tmp_path / "new" / "F")]) == 2
    _one_line(capsys, "m.svs")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert main([*embed, str(tmp_path / "empty")]) == 2
    _one_line(capsys, "m.svs")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def _damage_tiles_after_the_first(slide):
    """Overwrite the level-0 tiles of ``slide`` except its first (which opening the slide decodes) in place."""
    import tifffile

    data = bytearray(slide.read_bytes())
    with tifffile.TiffFile(slide) as t:
        for off, n in list(zip(t.pages[0].dataoffsets, t.pages[0].databytecounts))[1:]:
            data[off:off + n] = b"\xff" * n
    slide.write_bytes(bytes(data))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_slide_moved_or_damaged_after_tiling_is_one_line_with_any_workers(tmp_path, capsys, caplog, workers):
    """`wsi embed --workers 2` reads tiles in DataLoader worker processes: a slide moved since tiling came back
    from them as torch's "Caught SlideError in DataLoader worker process 0 ... Original Traceback" (the library's
    embed_tiles raised that text; the CLI kept its last line), and a slide damaged after tiling (a tile that no
    longer decodes) was an OpenSlideError traceback with any --workers. Now: the same one line naming the slide,
    exit 2, with 0 or 2 workers; embed_tiles raises the SlideError itself; no bag or temporary file is left.
    A slide truncated after tiling: tifffile's own log line ("<tifffile.TiffPages @8> invalid page offset ...",
    printed by logging above the error) is now part of the one line."""
    from gensis.wsi.embed import embed_tiles
    from gensis.wsi.slide import SlideError

    slide = make_svs(tmp_path / "m.svs", slide_image(256, 256, [(0, 0, 256, 256)]), mpp=0.5, downsamples=(1,),
                     tile=128)
    tiles = tmp_path / "T"
    assert main(["wsi", "tile", str(slide), "--out", str(tiles), "--mag", "20", "--tile-size", "32", "--quiet"]) == 0
    slide.rename(tmp_path / "elsewhere.svs")
    with pytest.raises(SlideError) as e:
        embed_tiles("pixels", tiles, tmp_path / "F", batch_size=8, num_workers=workers, device="cpu", quiet=True)
    assert str(e.value) == f"slide not found: {slide}"
    (tmp_path / "elsewhere.svs").rename(slide)
    _damage_tiles_after_the_first(slide)
    capsys.readouterr()
    assert main(["wsi", "embed", "--encoder", "pixels", "--tiles", str(tiles), "--out", str(tmp_path / "F"),
                 "--quiet", "--device", "cpu", "--batch-size", "8", "--workers", str(workers)]) == 2
    _one_line(capsys, "cannot read the tile at level-0", str(slide), "damaged or changed since it was tiled")
    assert not (tmp_path / "F").exists()
    slide.write_bytes(slide.read_bytes()[:2000])
    assert main(["wsi", "embed", "--encoder", "pixels", "--tiles", str(tiles), "--out", str(tmp_path / "F"),
                 "--quiet", "--device", "cpu", "--workers", str(workers)]) == 2
    _one_line(capsys, f"cannot read slide {slide}: openslide: ", "tiffslide: ", "(tifffile: ", "invalid page offset")
    assert not [r for r in caplog.records if r.name == "tifffile"]
    assert not (tmp_path / "F").exists()


def test_pretraining_on_tiles_whose_slide_is_damaged_after_a_checkpoint_says_how_to_resume(tmp_path, capsys,
                                                                                          monkeypatch):
    """`gensis pretrain --data tiles:...` (tiles read in 2 DataLoader workers) when the slide is damaged after
    epoch 0's checkpoint: one line naming the slide, exit 2, ending with how to continue (the slide restored,
    then --resume from epoch 1); restored, --resume finishes. Before, the line said nothing about --resume."""
    from gensis.train import loop

    slide = make_svs(tmp_path / "m.svs", slide_image(256, 256, [(0, 0, 256, 256)]), mpp=0.5, downsamples=(1,),
                     tile=128)
    tiles = tmp_path / "T"
    assert main(["wsi", "tile", str(slide), "--out", str(tiles), "--mag", "20", "--tile-size", "16", "--quiet"]) == 0
    good = slide.read_bytes()
    original = loop._save

    def save_then_damage(task, rt, run, epoch):
        original(task, rt, run, epoch)
        if epoch == 0:
            _damage_tiles_after_the_first(slide)  # 3 of the 4 TIFF tiles: every batch of epoch 1 meets one

    monkeypatch.setattr(loop, "_save", save_then_damage)
    run = tmp_path / "run"
    argv = ["pretrain", "--data", f"tiles:{tiles}@all", "--out", str(run), "--quiet", "--preset", "smoke",
            "data.image_size=16", "model.patch_size=4", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
            "dino.out_dim=64", "dino.hidden_dim=64", "dino.bottleneck_dim=16", "aug.local_size=8",
            "optim.batch_size=16", "optim.epochs=2", "data.limit=64", "train.threads=1", "train.amp=off",
            "data.num_workers=2"]
    capsys.readouterr()
    assert main(argv) == 2
    _one_line(capsys, "cannot read the tile at level-0", str(slide), "restore that file as it was",
              "then rerun with --resume to continue from epoch 1 (the checkpoint of epoch 0 is kept)")
    slide.write_bytes(good)
    monkeypatch.setattr(loop, "_save", original)
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err


def test_a_slide_replaced_under_its_name_after_tiling_is_named_and_retiled(tmp_path, capsys):
    """Another slide saved under a tiled slide's name (a rescan, a slide of another cohort) kept the old
    coordinates: `wsi tile` said "already done", and `wsi embed` / `pretrain` read tiles from wherever those
    coordinates now fall (background, other tissue), silently. Now reading refuses it in one line naming the
    slide and what changed, and rerunning `wsi tile` tiles it again."""
    slide = tmp_path / "s" / "m.svs"
    slide.parent.mkdir()
    make_svs(slide, slide_image(256, 256, [(0, 0, 128, 256)]), mpp=0.5, downsamples=(1,), tile=128)
    tiles = tmp_path / "T"
    tile = ["wsi", "tile", str(slide.parent), "--out", str(tiles), "--mag", "20", "--tile-size", "32", "--quiet"]
    assert main(tile) == 0
    n_before = int(json.loads(next(tiles.glob("*/tiling.json")).read_text())["slides"]["m"]["n_tiles"])
    embed = ["wsi", "embed", "--encoder", "pixels", "--tiles", str(tiles), "--out", str(tmp_path / "F"), "--quiet",
             "--device", "cpu", "--workers", "0"]
    assert main(embed) == 0
    make_svs(slide, slide_image(384, 256, [(256, 0, 128, 256)], seed=3), mpp=0.5, downsamples=(1,), tile=128)
    capsys.readouterr()
    assert main([*embed[:-7], "--out", str(tmp_path / "F2"), *embed[-5:]]) == 2
    _one_line(capsys, f"slide {slide} is not the slide that was tiled", "level 0 is 384x256", "256x256")
    assert main(tile) == 0
    assert "0 already done" in capsys.readouterr().out
    n_after = int(json.loads(next(tiles.glob("*/tiling.json")).read_text())["slides"]["m"]["n_tiles"])
    assert n_after == n_before  # the same tissue area, now on the right of a wider slide
    assert main(embed) == 0  # the bag of the old slide is not kept as "already done"
    assert "1 slide(s), 0 already done" in capsys.readouterr().out
    assert main(embed) == 0 and "0 slide(s), 1 already done" in capsys.readouterr().out
    # same size in pixels, other bytes (another scan of the same area): refused too
    make_svs(slide, slide_image(384, 256, [(256, 0, 128, 256)], seed=4), mpp=0.5, downsamples=(1,), tile=128,
             compression="jpeg")
    from gensis.wsi.dataset import TileImageSet
    from gensis.wsi.slide import SlideError

    with pytest.raises(SlideError, match=r"the file is \d+ bytes, it was \d+ when tiled"):
        TileImageSet(tiles).get(0)


def test_a_slide_whose_retiling_failed_keeps_no_stale_tiles_of_other_settings(tmp_path, capsys):
    """`wsi tile` rerun with other settings (--min-tissue 0.9) where one slide now fails: that slide's tile file
    from the earlier settings stayed, and pretraining read its old tiles beside the others' new ones, silently."""
    from gensis.data.sources import open_data
    from gensis.errors import UserError

    slides = tmp_path / "s"
    slides.mkdir()
    for name in "ab":
        make_svs(slides / f"{name}.svs", slide_image(256, 256, [(0, 0, 160, 256)]), mpp=0.5, downsamples=(1,))
    tile = ["wsi", "tile", str(slides), "--out", str(tmp_path / "T"), "--mag", "20", "--tile-size", "32", "--quiet"]
    assert main(tile) == 0
    good = (slides / "b.svs").read_bytes()
    (slides / "b.svs").write_bytes(good[:2000])  # b can no longer be opened
    assert main([*tile, "--min-tissue", "0.9"]) == 1  # a tiled again, b failed
    with pytest.raises(UserError, match=r"slide b: its last `gensis wsi tile` failed .* from an earlier tiling "
                                        r"with other settings"):
        open_data(f"tiles:{tmp_path / 'T'}@all")
    assert main(tile) == 1  # b fails again, now with the settings its tile file was made with: still valid
    assert open_data(f"tiles:{tmp_path / 'T'}@all").slide_ids == ["a", "b"]
    (slides / "b.svs").write_bytes(good)
    assert main([*tile, "--min-tissue", "0.9"]) == 0
    assert open_data(f"tiles:{tmp_path / 'T'}@all").slide_ids == ["a", "b"]


def test_embed_with_a_timm_vit_from_a_local_safetensors_file(tiled, tmp_path, capsys):
    """`wsi embed --encoder timm:NAME=WEIGHTS` (what `gensis eval` takes, e.g. a published pathology ViT saved as
    safetensors) was refused ("not a pretraining run directory"). Now the tiles are embedded with that ViT and those
    weights (nothing downloaded); the bag names the encoder, a rerun skips it, another encoder's --out is refused."""
    import numpy as np
    import timm
    import torch
    from safetensors.torch import save_file

    from gensis.mil.bags import read_bag
    from gensis.models.encoder import normalize, resize_center_crop
    from gensis.wsi.dataset import TileImageSet

    d, _ = tiled
    torch.manual_seed(1)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, global_pool="token",
                          depth=1, dynamic_img_size=True).eval()
    w = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(w))
    spec = f"timm:vit_tiny_patch16_224={w}"
    embed = ["wsi", "embed", "--tiles", str(d / "T"), "--quiet", "--device", "cpu", "--workers", "0"]
    feats = tmp_path / "F"
    # depth=1 is not timm's vit_tiny: the weights do not fit, one line
    capsys.readouterr()
    assert main([*embed, "--encoder", spec, "--out", str(feats)]) == 2
    _one_line(capsys, "does not fit")
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, global_pool="token",
                          dynamic_img_size=True).eval()
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(w))
    assert main([*embed, "--encoder", spec, "--out", str(feats)]) == 0
    bag = read_bag(feats / "s.h5")
    ds = TileImageSet(d / "T")
    assert bag.features.shape == (len(ds), 192)
    assert bag.attrs["encoder"] == spec and bag.attrs["encoder_identity"].startswith("vit_tiny_patch16_224-")
    tile = torch.from_numpy(ds.get(0)).permute(2, 0, 1)[None]  # (1, 3, P, P) uint8, the bag's first row
    with torch.no_grad():
        want = m(normalize(resize_center_crop(tile, 224).float().div(255))).numpy()[0]  # resized to timm's 224 px
    np.testing.assert_allclose(bag.features[0], want, rtol=1e-4, atol=1e-4)
    capsys.readouterr()
    assert main([*embed, "--encoder", spec, "--out", str(feats)]) == 0
    assert "0 slide(s), 1 already done" in capsys.readouterr().out
    assert main([*embed, "--encoder", "pixels", "--out", str(feats)]) == 2
    _one_line(capsys, "another encoder, timm:vit_tiny_patch16_224=")
