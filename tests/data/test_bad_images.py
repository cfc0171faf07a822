"""Every malformed image/array form: refused by name (or skipped with data.skip_bad_images), every image mode
converted correctly, and an unreadable image met later (in a DataLoader worker) is one line, not a traceback."""

import io

import numpy as np
import pytest
from PIL import Image

from gensis.data import sources
from gensis.data.loader import ImageBatches
from gensis.data.sources import decode_image, open_data
from gensis.errors import UserError


def _folder(root, n=4, size=8):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((size, size, 3), 30 * i + 5, np.uint8)).save(root / c / f"{i}.png")
    return root


def _jpeg_bytes(size=32):
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_modes_are_converted_correctly(tmp_path):
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "cmyk.jpg", quality=100)
    r = decode_image(tmp_path / "cmyk.jpg")
    assert r.shape == (4, 4, 3) and r[..., 0].min() > 240 and r[..., 1:].max() < 15

    grad = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369)  # 0 .. 65535
    Image.fromarray(grad).save(tmp_path / "g16.png")  # 16-bit grey PNG
    g = decode_image(tmp_path / "g16.png")
    assert g.dtype == np.uint8 and g[0, 0, 0] == 0 and g[3, 3, 0] == 255 and g[..., 0].tolist() == g[..., 2].tolist()
    assert np.abs(g[..., 0].astype(int) - np.rint(grad / 257)).max() <= 1  # scaled, not clipped at 255

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[1, 1] = (10, 20, 30, 0)  # fully transparent: white, not the hidden colour
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    a = decode_image(tmp_path / "rgba.png")
    assert a[0, 0].tolist() == [10, 20, 30] and a[1, 1].tolist() == [255, 255, 255]

    pal = Image.new("P", (2, 2))
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "pal.png")
    p = decode_image(tmp_path / "pal.png")
    assert p[0, 1].tolist() == [200, 100, 50] and p[0, 0].tolist() == [0, 0, 0]
    pal.info["transparency"] = 0
    pal.save(tmp_path / "palt.png", transparency=0)
    assert decode_image(tmp_path / "palt.png")[0, 0].tolist() == [255, 255, 255]

    Image.new("LA", (2, 2), (100, 255)).save(tmp_path / "la.png")
    assert decode_image(tmp_path / "la.png")[0, 0].tolist() == [100, 100, 100]


@pytest.mark.parametrize("name,content,why", [
    ("empty.png", b"", "empty file (0 bytes)"),
    ("trunc.jpg", _jpeg_bytes()[:400], "Truncated"),
    ("trunc.png", None, ""),  # PNG cut in its data
    ("junk.png", b"\x89PNG\r\n\x1a\nnot really", "OSError"),
])
def test_bad_files_are_refused_by_name_before_any_work(tmp_path, name, content, why):
    root = _folder(tmp_path / "f")
    if content is None:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        content = buf.getvalue()[:-200]
    (root / "b" / name).write_bytes(content)
    with pytest.raises(UserError) as e:
        open_data(str(root), "train")
    msg = str(e.value)
    assert str(root / "b" / name) in msg and why in msg and "skip_bad_images" in msg and "\n" not in msg


def test_skip_bad_images_skips_and_counts(tmp_path, capsys):
    root = _folder(tmp_path / "f")
    (root / "a" / "x.jpg").write_bytes(_jpeg_bytes()[:300])
    (root / "b" / "y.png").write_bytes(b"")
    ds = open_data(str(root), "all", skip_bad_images=True)
    assert len(ds) == 8 and ds.labels.tolist() == [0] * 4 + [1] * 4
    err = capsys.readouterr().err
    assert "skipped 2 unreadable images of 10" in err


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_image_met_later_in_a_worker_is_one_line_or_skipped(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(sources, "FULL_DECODE_LIMIT", 0)  # a "large" set: only checked as it is read
    root = _folder(tmp_path / "f", n=8)
    (root / "a" / "3.png").write_bytes(_jpeg_bytes()[:300])  # corrupt, not empty: passes the quick check
    sources._CHECKED.clear()
    ds = open_data(str(root), "all")
    assert len(ds) == 16
    with pytest.raises(UserError) as e:
        for _ in ImageBatches(ds, 4, seed=0, num_workers=workers, load_size=8).epoch(0):
            pass
    msg = str(e.value)
    assert "\n" not in msg and str(root / "a" / "3.png") in msg and "skip_bad_images" in msg
    # the loader knows no checkpoint: a training stage adds the --resume hint when it has one (gensis.train.loop)
    assert "--resume" not in msg

    ds = open_data(str(root), "all", skip_bad_images=True)
    batches = ImageBatches(ds, 4, seed=0, num_workers=workers, load_size=8)
    seen = sum(len(idx) for _, idx in batches.epoch(0))
    assert seen == 15 and len(batches.skipped) == 1


def _npz(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return str(p)


@pytest.mark.parametrize("arrays,msg", [
    (dict(images=np.array([np.zeros((2, 2), np.uint8), "x"], dtype=object)), "'images' is an object array"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, None, 1], dtype=object)),
     "'labels' is an object array"),
    (dict(images=np.full((4, 8, 8), np.nan, np.float32)), "must be uint8, got float32 (float arrays, NaN"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, 1, 2, 5]), classes=np.array(["a", "b", "c"])),
     "label 5 is out of range"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0, -1, 0, 0])), "must be >= 0"),
    (dict(images=np.zeros((4, 8, 8, 2), np.uint8)), "N×H×W, N×H×W×3 or N×H×W×4"),
    (dict(images=np.zeros((4, 0, 8), np.uint8)), "zero-sized"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.array([0.0, np.nan, 1, 1])), "must be integers"),
])
def test_malformed_npz_is_refused_by_name(tmp_path, arrays, msg):
    p = _npz(tmp_path, **arrays)
    with pytest.raises(UserError) as e:
        open_data(p)
    assert p in str(e.value) and msg in str(e.value) and "\n" not in str(e.value)


def test_empty_and_truncated_npz(tmp_path):
    (tmp_path / "e.npz").write_bytes(b"")
    with pytest.raises(UserError, match="e.npz as .npz: empty file"):
        open_data(str(tmp_path / "e.npz"))
    p = _npz(tmp_path, images=np.zeros((40, 16, 16), np.uint8))
    data = open(p, "rb").read()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="t.npz"):
        open_data(str(tmp_path / "t.npz"))


def test_bad_image_in_a_plain_dataloader_worker_is_one_line(tmp_path, capsys, monkeypatch):
    """Any torch DataLoader over an ImageSet (bank embedding, user code): the CLI prints one line."""
    import torch

    from gensis.cli.main import _one_line

    monkeypatch.setattr(sources, "FULL_DECODE_LIMIT", 0)
    sources._CHECKED.clear()
    root = _folder(tmp_path / "f")
    (root / "a" / "1.png").write_bytes(_jpeg_bytes()[:300])
    ds = open_data(str(root), "all")

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return torch.from_numpy(ds.get(i))

    with pytest.raises(UserError) as e:
        list(torch.utils.data.DataLoader(Plain(), batch_size=4, num_workers=1))
    line = _one_line(e.value)
    assert "\n" not in line and line.startswith("cannot read image") and str(root / "a" / "1.png") in line


def test_python_api_on_a_corrupt_image_is_one_line_naming_it(tmp_path, monkeypatch):
    """gensis.embed / knn / pretrain on a torchvision ImageFolder holding a corrupt file raised PIL's bare
    ``OSError: Truncated File Read`` (no file named); on a folder too large to decode first, the features path
    named the file but not how to skip it. A bug in a dataset's own code still raises as it is."""
    import torch
    import torchvision

    import gensis

    root = _folder(tmp_path / "f", n=8)
    bad = root / "a" / "3.png"
    bad.write_bytes(_jpeg_bytes()[:300])  # corrupt, not empty
    tv = torchvision.datasets.ImageFolder(str(root))
    for data in (tv, torch.utils.data.Subset(tv, list(range(16)))):
        with pytest.raises(UserError) as e:
            gensis.embed("pixels", data)
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"cannot read image {bad}: OSError") and "skip_bad_images" in msg
    with pytest.raises(UserError, match=f"cannot read image {bad}"):
        gensis.pretrain(tv, tmp_path / "run", preset="smoke", quiet=True,
                        overrides={"optim.epochs": 1, "optim.batch_size": 4, "data.num_workers": 0})

    class Buggy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            if i == 2:
                raise KeyError("my bug")
            return np.zeros((8, 8, 3), np.uint8)

    with pytest.raises(KeyError, match="my bug"):
        gensis.embed("pixels", Buggy())

    monkeypatch.setattr(sources, "FULL_DECODE_LIMIT", 0)  # a "large" folder: decoded as it is read
    sources._CHECKED.clear()
    with pytest.raises(UserError) as e:
        gensis.embed("pixels", str(root))
    assert str(bad) in str(e.value) and "skip_bad_images" in str(e.value)
