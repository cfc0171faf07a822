"""`--data FOLDER` holding whole-slide images instead of tiles (a pathologist's first try): `.svs`/`.ndpi` files
were left out without a word, and a slide saved as a pyramidal `.tif` was read whole as one training image (or,
large, refused as a PIL "decompression bomb" with the advice to skip it). Now one line says to tile them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tifffile")

from wsi_slides import make_svs, slide_image  # noqa: E402

from gensis.data.sources import open_data  # noqa: E402
from gensis.errors import UserError  # noqa: E402


def test_a_folder_of_slides_is_refused_naming_wsi_tile(tmp_path, monkeypatch):
    import gensis.wsi.slide as ws

    img = slide_image(512, 384, [(64, 64, 256, 256)])
    svs = tmp_path / "svs"
    svs.mkdir()
    make_svs(svs / "case 1.svs", img, mpp=0.5)
    Image.fromarray(img[:64, :64]).save(svs / "note.png")  # an image beside the slides: the slides were left out
    with pytest.raises(UserError, match=r"holds whole-slide images \(case 1\.svs; 1 found\).*gensis wsi tile"):
        open_data(str(svs), "all")
    tif = tmp_path / "tif" / "tumor"
    tif.mkdir(parents=True)
    make_svs(tif / "s.tif", img, mpp=0.5, downsamples=(1, 2))  # tiled, two levels: a slide named .tif
    monkeypatch.setattr(ws, "SLIDE_TIFF_MIN_BYTES", 0, raising=False)  # (a real slide is far above the size threshold)
    with pytest.raises(UserError, match=r"holds whole-slide images \(s\.tif; 1 found\)"):
        open_data(str(tmp_path / "tif"), "all")
    with pytest.raises(UserError, match=r"gensis wsi tile .*case 1\.svs --out TILES"):
        open_data(str(svs / "case 1.svs"))


def test_tiff_tiles_are_still_images(tmp_path, monkeypatch):
    import tifffile

    import gensis.wsi.slide as ws

    monkeypatch.setattr(ws, "SLIDE_TIFF_MIN_BYTES", 0, raising=False)
    rng = np.random.default_rng(0)
    for i in range(4):
        tile = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        tifffile.imwrite(tmp_path / f"t{i}.tif", tile)                    # strips (QuPath's tile export)
        tifffile.imwrite(tmp_path / f"tiled{i}.tif", tile, tile=(32, 32))  # one tiled level, small
    assert len(open_data(str(tmp_path), "all")) == 8


def test_slides_folder_as_tiles_and_tile_files_as_bags_say_what_to_run(tmp_path, capsys):
    """`wsi embed --tiles slides/` said "run gensis wsi tile SLIDES --out slides" (tiles into the slide folder);
    `mil train --feats TILES/.../patches` said "cannot read bag ...: object 'features' doesn't exist"."""
    from gensis.cli.main import main

    slides = tmp_path / "slides"
    slides.mkdir()
    for name in "ab":
        make_svs(slides / f"{name}.svs", slide_image(256, 256, [(0, 0, 200, 200)]), mpp=0.5, downsamples=(1,))
    capsys.readouterr()
    assert main(["wsi", "embed", "--encoder", "pixels", "--tiles", str(slides), "--out", str(tmp_path / "F")]) == 2
    err = capsys.readouterr().err
    assert f"{slides} holds slides, not tiles: tile them first (`gensis wsi tile {slides} --out TILES`)" in err
    assert main(["wsi", "tile", str(slides), "--out", str(tmp_path / "T"), "--mag", "20", "--tile-size", "32",
                 "--quiet"]) == 0
    (tmp_path / "l.csv").write_text("slide,label\na,x\nb,y\n")
    patches = next((tmp_path / "T").glob("*/patches"))
    capsys.readouterr()
    assert main(["mil", "train", "--feats", str(patches), "--labels", str(tmp_path / "l.csv"), "--out",
                 str(tmp_path / "M")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "is a tile file of `gensis wsi tile` (coordinates), not a bag" in err[0], err
