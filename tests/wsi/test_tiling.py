"""Tiling whole-slide images: level choice, resampling, tissue threshold, coordinates, read-back, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openslide")
pytest.importorskip("tiffslide")
pytest.importorskip("h5py")

from wsi_slides import make_plain_tiff, make_svs, slide_image  # noqa: E402

from gensis.wsi.geometry import plan_geometry, read_tile  # noqa: E402
from gensis.wsi.slide import MppSource, open_slide  # noqa: E402
from gensis.wsi.tilefile import read_slide_tiles  # noqa: E402
from gensis.wsi.tiler import TileSettings, tile_slides  # noqa: E402

W, H = 2048, 1536
# tissue boxes in level-0 pixels; at 20x (0.5 µm/px) with 128 px tiles on a 0.25 µm/px slide a tile covers 256
# level-0 px, so box 1 holds 3×2 whole tiles and box 2 holds 2×2, at known places
BOXES = [(256, 256, 768, 512), (1280, 768, 512, 512)]
EXPECTED_20X = sorted([(x, y) for x in (256, 512, 768) for y in (256, 512)]
                      + [(x, y) for x in (1280, 1536) for y in (768, 1024)])


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("slides")
    img = slide_image(W, H, BOXES, seed=0)
    return {"img": img, "svs": make_svs(d / "a.svs", img, mpp=0.25),
            "nompp": make_svs(d / "nompp.svs", img, mpp=None),
            "plain": make_plain_tiff(d / "plain.tif", img, mpp=None), "dir": d}


def test_geometry_level_choice_and_resampling():
    ds = [1.0, 2.0, 4.0]
    g = plan_geometry(0.25, 0.5, ds, (W, H), 256)          # 20x on a 40x slide: level 1, as is
    assert (g.level, g.read_size, g.patch_size_level0, g.resampled) == (1, 256, 512, False)
    g = plan_geometry(0.25, 1.0, ds, (W, H), 256)          # 10x: level 2
    assert (g.level, g.read_size, g.patch_size_level0) == (2, 256, 1024)
    g = plan_geometry(0.25, 0.75, ds, (W, H), 256)         # d = 3: read 384 px at level 1, resize to 256
    assert (g.level, g.read_size, g.patch_size_level0, g.resampled) == (1, 384, 768, True)
    g = plan_geometry(0.25, 2.0, [1.0], (W, H), 256)       # no pyramid: level 0, 2048 px resized
    assert (g.level, g.read_size, g.resampled) == (0, 2048, True)
    g = plan_geometry(0.499, 0.5, [1.0], (W, H), 256, overlap=64)  # within tolerance: no resampling
    assert (g.read_size, g.patch_size_level0, g.step_level0) == (256, 256, 192)
    with pytest.raises(Exception, match="upsampled"):
        plan_geometry(0.5, 0.25, ds, (W, H), 256)
    grid = plan_geometry(0.25, 0.5, ds, (W, H), 256).grid()
    assert len(grid) == (W // 512) * (H // 512) and grid.max(0).tolist() == [W - 512, H - 512]


def test_tile_counts_coordinates_and_readback(slides, tmp_path):
    out, res = tile_slides([slides["svs"]], tmp_path / "T", TileSettings(target_mpp=0.5, patch_size=128), quiet=True)
    assert out.name == "20x_128px_0px_overlap" and res[0].status == "done"
    st = read_slide_tiles(out / "patches" / "a.h5")
    assert sorted(map(tuple, st.coords.tolist())) == EXPECTED_20X
    g = st.geometry
    assert (g.level, g.read_size, g.patch_size_level0, g.resampled) == (1, 128, 256, False)
    assert st.attrs["mpp_source"] == "metadata" and st.attrs["backend"] == "openslide"
    level1 = slides["img"][::2, ::2]
    with open_slide(st.slide_path) as s:
        for x, y in st.coords[:3]:
            tile = read_tile(s, g, int(x), int(y))
            np.testing.assert_array_equal(tile, level1[y // 2:y // 2 + 128, x // 2:x // 2 + 128])
    for sub in ("thumbnails", "visualization"):
        assert (out / sub / "a.png").is_file()
    # resumable: the same settings skip the slide
    _, res2 = tile_slides([slides["svs"]], tmp_path / "T", TileSettings(target_mpp=0.5, patch_size=128), quiet=True)
    assert res2[0].status == "skipped"


def test_resampled_tiles_and_tissue_threshold(slides, tmp_path):
    # 0.75 µm/px: read 192 px at level 1 and resize to 128; a tile is 384 level-0 px
    out, _ = tile_slides([slides["svs"]], tmp_path / "T", TileSettings(target_mpp=0.75, patch_size=128,
                                                                        min_tissue=0.0), quiet=True)
    st = read_slide_tiles(out / "patches" / "a.h5")
    assert st.geometry.resampled and st.geometry.read_size == 192 and len(st) == (W // 384) * (H // 384)
    from PIL import Image

    x, y = (int(v) for v in st.coords[7])
    region = slides["img"][::2, ::2][y // 2:y // 2 + 192, x // 2:x // 2 + 192]
    want = np.asarray(Image.fromarray(region).resize((128, 128), Image.Resampling.BILINEAR))
    with open_slide(st.slide_path) as s:
        np.testing.assert_array_equal(read_tile(s, st.geometry, x, y), want)
    # tissue fraction: the tile at (0, 768) is glass, the one at (384, 384) lies inside box 1, the one at (0, 0)
    # overlaps it by 128² of 384² level-0 pixels
    frac = dict(zip(map(tuple, st.coords.tolist()), st.tissue))
    assert frac[(0, 768)] < 0.02 and frac[(384, 384)] > 0.98 and abs(frac[(0, 0)] - 1 / 9) < 0.03
    # the tile at (768, 384) is 256/384 tissue (box 1 ends at x=1024): kept at 0.5, dropped at 0.8
    assert 0.55 < frac[(768, 384)] < 0.8
    for thr, kept in ((0.5, True), (0.8, False)):
        out2, _ = tile_slides([slides["svs"]], tmp_path / f"T{thr}",
                              TileSettings(target_mpp=0.75, patch_size=128, min_tissue=thr), quiet=True)
        got = set(map(tuple, read_slide_tiles(out2 / "patches" / "a.h5").coords.tolist()))
        assert ((768, 384) in got) is kept and (0, 0) not in got


def test_10x_uses_level_2(slides, tmp_path):
    out, _ = tile_slides([slides["svs"]], tmp_path / "T", TileSettings(target_mpp=1.0, patch_size=64), quiet=True)
    st = read_slide_tiles(out / "patches" / "a.h5")
    assert out.name == "10x_64px_0px_overlap" and st.geometry.level == 2 and not st.geometry.resampled
    with open_slide(st.slide_path) as s:
        x, y = (int(v) for v in st.coords[0])
        np.testing.assert_array_equal(read_tile(s, st.geometry, x, y),
                                      slides["img"][::4, ::4][y // 4:y // 4 + 64, x // 4:x // 4 + 64])


def test_plain_tiff_needs_tiffslide(slides):
    import openslide

    with pytest.raises(openslide.OpenSlideError):
        openslide.OpenSlide(str(slides["plain"]))
    with open_slide(slides["plain"]) as s:
        assert s.backend == "tiffslide" and s.metadata_mpp is None
        np.testing.assert_array_equal(s.read_region(300, 400, 0, 32, 16), slides["img"][400:416, 300:332])


def _cli(*argv, cwd=None):
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "gensis.cli.main", *map(str, argv)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_cli_refuses_slide_without_mpp_then_accepts_slide_mpp(slides, tmp_path):
    r = _cli("wsi", "tile", slides["nompp"], "--out", tmp_path / "T", "--mag", 20, "--tile-size", 128)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(slides["nompp"]) in lines[0] and "--slide-mpp" in lines[0]
    _, res = tile_slides([slides["plain"]], tmp_path / "T", TileSettings(target_mpp=0.5, patch_size=128), quiet=True)
    assert res[0].status == "failed" and str(slides["plain"]) in res[0].error and "--slide-mpp" in res[0].error
    # one unreadable slide among good ones: named, skipped, the others finish (exit 1)
    bad = slides["dir"] / "broken.svs"
    bad.write_bytes(b"not a slide at all")
    r = _cli("wsi", "tile", slides["nompp"], slides["plain"], bad, "--out", tmp_path / "T", "--mag", 20,
             "--tile-size", 128, "--slide-mpp", 0.25, "--workers", 2)
    assert r.returncode == 1 and "broken.svs" in r.stderr and "tiled 2 slide(s)" in r.stdout, r.stderr
    for sid in ("nompp", "plain"):
        st = read_slide_tiles(tmp_path / "T" / "20x_128px_0px_overlap" / "patches" / f"{sid}.h5")
        assert sorted(map(tuple, st.coords.tolist())) == EXPECTED_20X and st.attrs["mpp_source"] == "--slide-mpp"
    assert read_slide_tiles(tmp_path / "T" / "20x_128px_0px_overlap" / "patches" / "plain.h5").attrs["backend"] == \
        "tiffslide"


def test_mpp_csv(slides, tmp_path):
    csv = tmp_path / "mpp.csv"
    csv.write_text("slide,mpp\nnompp,0.5\n")
    out, res = tile_slides([slides["nompp"]], tmp_path / "T", TileSettings(target_mpp=1.0, patch_size=128),
                           MppSource(None, {"nompp": 0.5}), quiet=True)
    st = read_slide_tiles(out / "patches" / "nompp.h5")
    assert st.attrs["mpp_source"] == "csv" and st.geometry.slide_mpp == 0.5 and st.geometry.level == 1


def test_jpeg2000_pyramid_without_mpp(slides, tmp_path):
    """A multi-level JPEG 2000 TIFF without mpp: OpenSlide opens it but cannot decode it, tiffslide can."""
    pytest.importorskip("imagecodecs")
    img = slides["img"][:768, :1024]
    path = make_svs(tmp_path / "j2k.svs", img, mpp=None, compression="jpeg2000")
    _, res = tile_slides([path], tmp_path / "T", TileSettings(target_mpp=0.5, patch_size=128), quiet=True)
    assert res[0].status == "failed" and str(path) in res[0].error and "--slide-mpp" in res[0].error
    out, res = tile_slides([path], tmp_path / "T", TileSettings(target_mpp=0.5, patch_size=128),
                           MppSource(default=0.25), quiet=True)
    st = read_slide_tiles(out / "patches" / "j2k.h5")
    assert res[0].status == "done" and st.attrs["backend"] == "tiffslide" and st.geometry.level == 1
    assert sorted(map(tuple, st.coords.tolist())) == [(x, y) for x, y in EXPECTED_20X if x + 256 <= 1024 and y + 256 <= 768]
    with open_slide(path) as s:
        x, y = (int(v) for v in st.coords[0])
        np.testing.assert_array_equal(read_tile(s, st.geometry, x, y), img[::2, ::2][y // 2:y // 2 + 128, x // 2:x // 2 + 128])


def test_thumbnail_of_a_slide_without_pyramid_is_read_in_strips(slides):
    """A plain TIFF has no small level: the thumbnail is built strip by strip (box filter), not in one read."""
    img = slides["img"]
    with open_slide(slides["plain"]) as s:
        th = s.thumbnail(64)                                     # 2048 > 8·64: strip path, factor 32
    want = img[:1536 // 32 * 32, :2048].reshape(48, 32, 64, 32, 3).mean((1, 3))
    assert th.shape == (48, 64, 3) and np.abs(th.astype(float) - want).max() <= 1.0


def test_ctrl_c_stops_parallel_tiling_without_starting_queued_slides(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) during `wsi tile --workers 2`: the pool caught
    the KeyboardInterrupt of each worker's slide as that slide's result and went on with every queued slide, so
    the command exited (130) only when all were tiled. Now: 'gensis: interrupted', exit 130, the queued slides
    not started, no temporary file, no worker left running."""
    import signal
    import shutil
    import time

    first = make_svs(tmp_path / "s0.svs", slide_image(2048, 2048, [(0, 0, 2048, 2048)]), mpp=0.5,
                     downsamples=(1, 4), tile=256)
    slides = [first] + [shutil.copy(first, tmp_path / f"s{i}.svs") for i in range(1, 6)]
    out = tmp_path / "T"
    p = subprocess.Popen([sys.executable, "-m", "gensis.cli.main", "wsi", "tile", *map(str, slides), "--out",
                          str(out), "--mag", "20", "--tile-size", "16", "--quiet", "--workers", "2"],
                         stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env={**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"})
    thumbs = out / "20x_16px_0px_overlap" / "thumbnails"
    t0 = time.time()
    while not (thumbs.is_dir() and any(thumbs.glob("*.png"))) and p.poll() is None and time.time() - t0 < 120:
        time.sleep(0.02)  # a slide is being tiled
    os.killpg(p.pid, signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130 and err.strip() == ("gensis: interrupted; run the same command again to continue "
                                                   "(finished slides are kept)"), (p.returncode, err[-3000:])
    done = list((out / "20x_16px_0px_overlap" / "patches").glob("*.h5"))
    assert len(done) <= 2, [f.name for f in done]  # at most the two slides the workers were on
    assert not [f for f in out.rglob("*") if f.suffix == ".tmp"]
    for _ in range(50):  # the workers exit with the pool (zombies of a reaper-less container init aside)
        left = [pid for pid in subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True,
                                              text=True).stdout.split() if _alive(pid)]
        if not left:
            break
        time.sleep(0.1)
    assert not left, left


def test_ctrl_c_while_the_tiling_workers_start_is_one_line_and_no_traceback(tmp_path):
    """A Ctrl-C (SIGINT to the process group) while `wsi tile --workers 2` starts its workers: each worker, still
    importing gensis, printed its KeyboardInterrupt traceback above 'gensis: interrupted'. Workers now start
    with SIGINT held until their handler is in place: one line, exit 130, no slide tiled."""
    import signal
    import shutil

    first = make_svs(tmp_path / "s0.svs", slide_image(512, 512, [(0, 0, 512, 512)]), mpp=0.5, downsamples=(1, 4))
    slides = [first] + [shutil.copy(first, tmp_path / f"s{i}.svs") for i in range(1, 4)]
    out = tmp_path / "T"
    argv = ["wsi", "tile", *map(str, slides), "--out", str(out), "--mag", "20", "--tile-size", "16", "--quiet",
            "--workers", "2"]
    script = f"""
import os, signal, sys, time
signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT}})  # as a terminal starts it
signal.signal(signal.SIGINT, signal.default_int_handler)
from concurrent.futures import ProcessPoolExecutor
submit, n = ProcessPoolExecutor.submit, [0]
def ctrl_c_as_the_workers_start(self, *a, **kw):
    fut = submit(self, *a, **kw)
    n[0] += 1
    if n[0] == {len(slides)}:  # every worker process started: now importing gensis
        time.sleep(0.5)
        os.killpg(0, signal.SIGINT)
    return fut
ProcessPoolExecutor.submit = ctrl_c_as_the_workers_start
from gensis.cli.main import main
sys.exit(main({argv!r}))
"""
    # each worker's import of the tiler takes 2 s more (a sitecustomize of the workers only): the Ctrl-C, 0.5 s
    # after they started, lands while they import, on a loaded machine too
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys, time\n"
        "if 'spawn_main' in ' '.join(sys.orig_argv):\n"
        "    class SlowTiler:\n"
        "        def find_spec(self, name, path=None, target=None):\n"
        "            if name == 'gensis.wsi.tiler':\n"
        "                time.sleep(2)\n"
        "            return None\n"
        "    sys.meta_path.insert(0, SlowTiler())\n")
    env = {**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       start_new_session=True, env=env)
    line = "gensis: interrupted; run the same command again to continue (finished slides are kept)"
    assert p.returncode == 130 and p.stderr.strip() == line, (p.returncode, p.stderr[-3000:])
    assert not list((out / "20x_16px_0px_overlap" / "patches").glob("*.h5"))


def test_a_sigkilled_parallel_tiling_leaves_no_worker_running(tmp_path):
    """`wsi tile --workers 2` killed with SIGKILL (the OOM killer, a scheduler) or SIGTERM: its spawned workers,
    blocked on the pool's queue (whose pipe each holds open), outlived it for ever, with the resource tracker,
    holding the command's stdout and stderr (`gensis wsi tile ... | tee log` never ended). Now they end with it;
    the rerun finishes the tiling."""
    import signal
    import shutil
    import time

    from gensis.cli.main import main

    first = make_svs(tmp_path / "s0.svs", slide_image(2048, 2048, [(0, 0, 2048, 2048)]), mpp=0.5,
                     downsamples=(1, 4), tile=256)
    slides = [first] + [shutil.copy(first, tmp_path / f"s{i}.svs") for i in range(1, 4)]
    out = tmp_path / "T"
    cmd = ["wsi", "tile", *map(str, slides), "--out", str(out), "--mag", "20", "--tile-size", "16", "--quiet",
           "--workers", "2"]
    for sig in (signal.SIGKILL,):  # (SIGTERM ends the command the same way: no handler)
        p = subprocess.Popen([sys.executable, "-m", "gensis.cli.main", *cmd], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True,
                             env={**os.environ, "GENSIS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"})
        group = []
        t0 = time.time()
        while len(group) < 4 and p.poll() is None and time.time() - t0 < 120:  # the command, 2 workers, tracker
            group = subprocess.run(["pgrep", "-g", str(p.pid)], capture_output=True, text=True).stdout.split()
            time.sleep(0.05)
        time.sleep(0.5)
        assert p.poll() is None, "finished before the kill"
        p.send_signal(sig)
        p.wait()
        try:
            for _ in range(150):
                left = [pid for pid in group if _alive(pid)]
                if not left:
                    break
                time.sleep(0.1)
            assert not left, (sig, left)
        finally:
            for pid in group:
                if _alive(pid):
                    os.kill(int(pid), signal.SIGKILL)
    assert main(cmd) == 0
    assert len(list((out / "20x_16px_0px_overlap" / "patches").glob("*.h5"))) == 4


def _alive(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_parallel_skip_lines_come_in_the_order_of_the_slide_list(tmp_path):
    """`wsi tile --workers 2`: the per-slide "skipped" lines are printed in the order the slides were given, not
    in the order the workers finish them. The first slide fails only after its whole tiling (its tile file's
    name is taken by a folder), the three after it fail at once (not slides at all): the workers finish them
    first, so completion order and input order differ."""
    slow = make_svs(tmp_path / "s0.svs", slide_image(2048, 2048, [(0, 0, 2048, 2048)]), mpp=0.5,
                    downsamples=(1, 4), tile=256)
    bad = []
    for i in (1, 2, 3):
        bad.append(tmp_path / f"s{i}.svs")
        bad[-1].write_bytes(b"not a slide at all")
    out = tmp_path / "T"
    (out / "20x_16px_0px_overlap" / "patches" / "s0.h5").mkdir(parents=True)  # written last: fails last
    r = _cli("wsi", "tile", slow, *bad, "--out", out, "--mag", 20, "--tile-size", 16, "--workers", 2)
    assert r.returncode == 2, r.stderr[-3000:]
    skips = [line for line in r.stderr.splitlines() if line.startswith("gensis: skipped")]
    assert len(skips) == 4, r.stderr[-3000:]
    assert [next(n for n in ("s0", "s1", "s2", "s3") if f"{n}.svs" in line) for line in skips] == \
        ["s0", "s1", "s2", "s3"], skips
    assert "IsADirectoryError" in skips[0] or "directory" in skips[0].lower(), skips[0]


def test_tiles_smaller_than_a_thumbnail_pixel(tmp_path, capsys):
    """Small tiles on a large slide (32 px at 20x on a slide longer than 32,768 px, the default 1024-px
    thumbnail): each tile is less than one thumbnail pixel, and drawing its outline made PIL raise "x1 must be
    greater than or equal to x0": every such slide failed. The same geometry here with a 16-px thumbnail."""
    from gensis.cli.main import main
    from gensis.wsi.tiler import outline_tiles

    thumb = np.full((8, 8, 3), 255, np.uint8)
    drawn = outline_tiles(thumb, np.array([[0, 0], [40, 24]]), 10, (16.0, 16.0))  # a tile of 10 px, pixels of 16
    marked = (drawn != 255).any(axis=2)  # a mark at each tile (PIL rounds the float box to 1-2 pixels)
    assert marked[0, 0] and marked[1:3, 2:4].any() and marked.sum() <= 4
    slide = make_svs(tmp_path / "big.svs", slide_image(512, 512, [(64, 64, 320, 320)]), mpp=0.5, downsamples=(1,))
    assert main(["wsi", "tile", str(slide), "--out", str(tmp_path / "T"), "--mag", "20", "--tile-size", "16",
                 "--thumb-size", "16", "--quiet"]) == 0, capsys.readouterr().err
    assert len(read_slide_tiles(next((tmp_path / "T").glob("*/patches/big.h5")))) > 0


@pytest.mark.parametrize("opts,msg", [(["--tile-size", "0"], "--tile-size must be >= 1, got 0"),
                                      (["--overlap", "64", "--tile-size", "64"], "--overlap must be in [0, --tile-size)"),
                                      (["--overlap", "-1"], "--overlap must be in")])
def test_tile_size_and_overlap_are_checked_before_any_slide(tmp_path, capsys, opts, msg):
    """They were each slide's failure: one "skipped" line per slide (the same reason N times), after the
    settings folder (e.g. 20x_0px_0px_overlap/) had been made."""
    from gensis.cli.main import main

    slides = [make_svs(tmp_path / f"s{i}.svs", slide_image(256, 256, [(0, 0, 128, 128)]), mpp=0.5, downsamples=(1,))
              for i in range(2)]
    capsys.readouterr()
    assert main(["wsi", "tile", *map(str, slides), "--out", str(tmp_path / "T"), "--quiet", *opts]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "T").exists()


def test_slides_in_sub_folders_are_named_not_left_out_silently(tmp_path, capsys):
    """`gensis wsi tile cases/` with one folder per case read only loose slides: the cases' slides were left
    out without a word (or the error said only "no slides in folder cases")."""
    from gensis.cli.main import main
    from gensis.errors import UserError
    from gensis.wsi.slide import find_slides

    for case in ("c1", "c2"):
        (tmp_path / "cases" / case).mkdir(parents=True)
        make_svs(tmp_path / "cases" / case / f"{case}.svs", slide_image(128, 128, [(0, 0, 64, 64)]), mpp=0.5,
                 downsamples=(1,))
    with pytest.raises(UserError, match=r"in folder .*cases; its sub-folders hold 2 \(e\.g\. .*c1\.svs\): give them"):
        find_slides([str(tmp_path / "cases")])
    make_svs(tmp_path / "cases" / "loose.svs", slide_image(128, 128, [(0, 0, 64, 64)]), mpp=0.5, downsamples=(1,))
    capsys.readouterr()
    assert [p.name for p in find_slides([str(tmp_path / "cases")])] == ["loose.svs"]
    assert "2 slides in sub-folders of" in capsys.readouterr().err
    assert len(find_slides([str(tmp_path / "cases" / "c1"), str(tmp_path / "cases" / "c2")])) == 2


def test_a_slide_without_tissue_is_named_not_counted_as_tiled_silently(tmp_path, capsys):
    """A blank slide (glass only) was 'tiled 2 slide(s) ..., N tiles' with exit 0 and no word: it got no bag from
    `wsi embed` and MIL left it out. Now a warning names it and the option to change, on the rerun too."""
    from gensis.cli.main import main

    d = tmp_path / "slides"
    d.mkdir()
    make_svs(d / "blank.svs", slide_image(512, 384, []), mpp=0.5, downsamples=(1, 2))
    make_svs(d / "tissue.svs", slide_image(512, 384, [(64, 64, 320, 256)]), mpp=0.5, downsamples=(1, 2))
    cmd = ["wsi", "tile", str(d), "--out", str(tmp_path / "T"), "--mag", "10", "--tile-size", "32", "--quiet"]
    for _ in range(2):  # the second run skips both slides and still says it
        capsys.readouterr()
        assert main(cmd) == 0
        err = capsys.readouterr().err
        warn = [line for line in err.splitlines() if "warning" in line]
        assert len(warn) == 1 and "1 slide(s) have no tile: blank (" in warn[0] and "--min-tissue" in warn[0], err
        assert "tissue" not in warn[0].split("no tile: ")[1].split(" (")[0]


def test_a_slide_tiled_but_missing_from_tiling_json_is_counted_with_its_tiles(tmp_path, capsys):
    """A SIGKILLed `wsi tile --workers N`: its spawned workers finish the slides they hold and write their tile
    files, which the dead main process never records in tiling.json. The rerun skipped them as done but counted
    0 tiles each (in its summary line and in tiling.json), and named them as slides without tissue."""
    import json

    from gensis.cli.main import main

    d = tmp_path / "slides"
    d.mkdir()
    for name in ("a", "b"):
        make_svs(d / f"{name}.svs", slide_image(512, 384, [(64, 64, 320, 256)]), mpp=0.5, downsamples=(1, 2))
    cmd = ["wsi", "tile", str(d), "--out", str(tmp_path / "T"), "--mag", "10", "--tile-size", "32", "--quiet"]
    assert main(cmd) == 0
    first = capsys.readouterr().out
    manifest = next((tmp_path / "T").iterdir()) / "tiling.json"
    m = json.loads(manifest.read_text())
    n_b = m["slides"]["b"]["n_tiles"]
    assert n_b > 0
    m_b = m["slides"].pop("b")  # as the killed run left it: b's tile file written, not recorded
    manifest.write_text(json.dumps(m))
    assert main(cmd) == 0
    out, err = capsys.readouterr()
    assert out.split(" tiles ->")[0].split()[-1] == first.split(" tiles ->")[0].split()[-1], (first, out)
    assert "warning" not in err, err
    assert json.loads(manifest.read_text())["slides"]["b"]["n_tiles"] == n_b
    # and its record is the one tiling it wrote (its grid, level, backend ...: not 'skipped', 0, {})
    entry = json.loads(manifest.read_text())["slides"]["b"]
    assert {**entry, "seconds": 0} == {**m_b, "seconds": 0}, (entry, m_b)


def test_mpp_csv_rows_naming_no_slide_and_other_header_forms(tmp_path, capsys):
    """An --mpp-csv row whose name matches no slide (a typo) was ignored without a word: the slide kept its
    metadata's resolution (wrong tiles) or was refused for lacking one. Now a warning names the row. 'Slide,MPP'
    headers were refused; a CSV with the header only said it needs the columns it has."""
    from gensis.cli.main import main

    slide = make_svs(tmp_path / "s.svs", slide_image(512, 384, [(64, 64, 320, 256)]), mpp=None, downsamples=(1, 2))
    tile = ["wsi", "tile", str(slide), "--mag", "10", "--tile-size", "32", "--quiet", "--mpp-csv"]
    (tmp_path / "m.csv").write_text("Slide,MPP\ns.svs,0.5\nss,0.25\n")
    capsys.readouterr()
    assert main([*tile, str(tmp_path / "m.csv"), "--out", str(tmp_path / "T")]) == 0
    err = capsys.readouterr().err
    assert "1 row(s) of" in err and "(e.g. ss)" in err, err
    (tmp_path / "h.csv").write_text("slide,mpp\n")
    assert main([*tile, str(tmp_path / "h.csv"), "--out", str(tmp_path / "T2")]) == 2
    assert "has the columns but no rows" in capsys.readouterr().err


def test_a_slide_too_coarse_for_the_magnification_is_named_once(tmp_path, capsys):
    """'gensis: skipped slide d/x10.svs: slide d/x10.svs is at 1 µm/px ...': the slide was named twice."""
    from gensis.cli.main import main

    d = tmp_path / "d"
    d.mkdir()
    make_svs(d / "x10.svs", slide_image(512, 384, [(64, 64, 320, 256)]), mpp=1.0, downsamples=(1, 2))
    make_svs(d / "x20.svs", slide_image(512, 384, [(64, 64, 320, 256)]), mpp=0.5, downsamples=(1, 2))
    capsys.readouterr()
    assert main(["wsi", "tile", str(d), "--out", str(tmp_path / "T"), "--mag", "20", "--tile-size", "32",
                 "--quiet"]) == 1
    line = next(line for line in capsys.readouterr().err.splitlines() if "x10.svs" in line)
    assert line.count("x10.svs") == 1 and "is at 1 µm/px" in line, line


def test_an_empty_slide_file_says_so(tmp_path):
    """A 0-byte slide (an interrupted copy) was "openslide: OpenSlideUnsupportedFormatError ...; tiffslide:
    TiffFileError: not a TIFF file: header=b''"."""
    from gensis.wsi.slide import SlideError

    (tmp_path / "z.svs").write_bytes(b"")
    with pytest.raises(SlideError, match=r"z\.svs is an empty file \(0 bytes"):
        open_slide(tmp_path / "z.svs")


def test_tiling_one_slide_without_pyramid_shows_a_progress_bar_unless_quiet(tmp_path, capsys, monkeypatch):
    """`wsi tile` of one slide showed no progress at all (the slides bar is off for one slide) while its thumbnail
    was read strip by strip, minutes on a large pyramid-less slide. Now a bar over the strips; none with --quiet."""
    from gensis.cli.main import main

    monkeypatch.delenv("GENSIS_NO_PROGRESS", raising=False)
    slide = make_plain_tiff(tmp_path / "p.tif", slide_image(512, 384, [(64, 64, 320, 256)]), mpp=0.5)
    tile = ["wsi", "tile", str(slide), "--mag", "20", "--tile-size", "32", "--thumb-size", "16"]  # 512 > 8·16: strips
    capsys.readouterr()
    assert main([*tile, "--out", str(tmp_path / "T")]) == 0
    err = capsys.readouterr().err
    assert "thumbnail of p" in err and "strip" in err, err
    assert main([*tile, "--out", str(tmp_path / "T2"), "--quiet"]) == 0
    assert "thumbnail of" not in capsys.readouterr().err


def test_a_macs_appledouble_files_are_not_slides(tmp_path):
    """Slides copied from a Mac come with ._CASE.svs files (metadata, not slides): they were listed as slides
    (each one an unreadable slide to report); hidden files are skipped as in every gensis data folder."""
    from gensis.wsi.slide import find_slides

    (tmp_path / "slides" / "case").mkdir(parents=True)
    for name in ("a.svs", "._a.svs", "case/b.svs", "case/._b.svs"):
        (tmp_path / "slides" / name).write_bytes(b"\0\x05\x16\x07Mac OS X" if "._" in name else b"II*\0")
    assert [p.name for p in find_slides([str(tmp_path / "slides")])] == ["a.svs"]
    assert [p.name for p in find_slides([str(tmp_path / "slides" / "case")])] == ["b.svs"]
