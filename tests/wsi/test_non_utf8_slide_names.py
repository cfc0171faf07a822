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
