"""A slide whose file name is not UTF-8 (Latin-1 `café.svs` from an old share or a Windows archive, which Python
holds as a str with surrogate escapes): `wsi tile` failed it with "UnicodeEncodeError: surrogates not allowed"
(writing the name into the tile file), and `pretrain --data tiles:` in the dataset's identity hash."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("openslide")
pytest.importorskip("h5py")

from wsi_slides import make_svs, slide_image  # noqa: E402

from gensis.cli.main import main  # noqa: E402


@pytest.mark.skipif(os.name == "nt", reason="file names are not bytes on Windows")
def test_a_latin1_slide_name_tiles_embeds_and_reads_back(tmp_path):
    from gensis.data.sources import open_data
    from gensis.mil.bags import read_bag

    name = os.fsdecode(b"caf\xe9")  # 'caf\udce9'
    slide = make_svs(tmp_path / f"{name}.svs", slide_image(256, 256, [(0, 0, 200, 200)]), mpp=0.5, downsamples=(1,))
    assert main(["wsi", "tile", str(tmp_path), "--out", str(tmp_path / "T"), "--mag", "20", "--tile-size", "32",
                 "--quiet"]) == 0
    ds = open_data(f"tiles:{tmp_path / 'T'}@all")
    assert ds.slide_ids == [name] and len(ds.identity) == 16 and ds.get(0).shape == (32, 32, 3)
    assert str(ds.slides[0].slide_path) == str(slide.resolve())
    assert main(["wsi", "embed", "--encoder", "pixels", "--tiles", str(tmp_path / "T"), "--out", str(tmp_path / "F"),
                 "--quiet", "--device", "cpu", "--workers", "0"]) == 0
    bag = read_bag(tmp_path / "F" / f"{name}.h5")
    assert bag.slide_id == name and bag.attrs["slide_path"] == str(slide.resolve())


@pytest.mark.skipif(os.name == "nt", reason="file names are not bytes on Windows")
def test_a_tile_folder_with_latin1_file_names_is_read(tmp_path):
    """A pathologist's folder of tile images named in Latin-1 (`tuile_é.png`): the folder's identity hash raised
    UnicodeEncodeError (a traceback) before any image was read."""
    import numpy as np
    from PIL import Image

    from gensis.data.sources import open_data

    rng = np.random.default_rng(0)
    for i in range(6):
        name = os.fsdecode(b"tuile_%d_\xe9.png" % i)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / name)
    ds = open_data(str(tmp_path), "all")
    assert len(ds) == 6 and len(ds.identity) == 16 and ds.get(0).shape == (16, 16, 3)
    assert len(open_data(str(tmp_path), "train")) == 5
