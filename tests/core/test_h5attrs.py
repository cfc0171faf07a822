"""gensis.h5attrs: HDF5 attributes written and read back as plain Python values (bags and tile files use it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gensis.h5attrs import attr_value, read_attrs, write_attrs

h5py = pytest.importorskip("h5py")


def test_attributes_round_trip_as_plain_values_on_every_target(tmp_path):
    attrs = {"slide_path": Path("/data/s 1.svs"), "slide_id": "s1", "patch_size": 256, "mpp": 0.25,
             "fill_holes": True, "format": "gensis-tiles/1"}
    with h5py.File(tmp_path / "a.h5", "w") as f:
        d = f.create_dataset("coords", data=np.zeros((2, 2), np.int64))
        write_attrs(attrs, f, d)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        for got in (read_attrs(f), read_attrs(f["coords"])):
            assert got == {**attrs, "slide_path": "/data/s 1.svs"}
            assert [type(got[k]) for k in ("slide_path", "patch_size", "mpp", "fill_holes")] == [str, int, float, bool]
        assert attr_value(f.attrs.get("missing")) is None


def test_attr_value_decodes_bytes_and_numpy_scalars():
    assert attr_value(b"key") == "key" and attr_value(np.int64(3)) == 3 and type(attr_value(np.float32(0.5))) is float
    arr = np.arange(3)
    assert attr_value(arr) is arr  # arrays as they come


def test_read_file_attrs_absent_unreadable_and_written(tmp_path):
    from gensis.h5attrs import read_file_attrs

    assert read_file_attrs(tmp_path / "absent.h5") is None
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file")
    assert read_file_attrs(bad) is None
    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        write_attrs({"slide": tmp_path / "a.svs", "n": 3}, f)
    assert read_file_attrs(good) == {"slide": str(tmp_path / "a.svs"), "n": 3}
