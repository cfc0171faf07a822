"""A user's own messy image folders and .npz files: what was left out without a word, or read wrong."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from PIL import Image

from gensis.data.sources import open_data
from gensis.errors import UserError


def _images(folder, n=3, size=8):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(folder).encode()))  # other images in each folder
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_images_two_or_more_levels_below_a_class_folder_are_named(tmp_path):
    """class/x/y/img.png: a class whose images sit two levels deeper was dropped without a word (only one level
    below a class folder was looked at), and so were deeper images of a class that holds some itself."""
    _images(tmp_path / "d1" / "a")
    _images(tmp_path / "d1" / "b" / "2019" / "jan")  # class b only in b/2019/jan/
    with pytest.raises(UserError, match=r"b/2019/jan/0.png would be left out \(and class 'b', which holds no image "
                                        r"itself\): .* b/2019/jan/ is 2 levels deeper"):
        open_data(tmp_path / "d1")
    _images(tmp_path / "d2" / "a")
    _images(tmp_path / "d2" / "b")
    _images(tmp_path / "d2" / "b" / "x" / "y" / "z")
    with pytest.raises(UserError, match=r"b/x/y/z/0.png would be left out: .* 3 levels deeper"):
        open_data(tmp_path / "d2")
    ok = tmp_path / "ok"
    _images(ok / "a")
    _images(ok / "b")
    (ok / "b" / "x" / "y").mkdir(parents=True)
    (ok / "b" / "x" / "y" / "loop").symlink_to(ok)  # a symlink back up, deep down: not followed
    (ok / "b" / "x" / "notes.txt").write_text("not an image")
    assert len(open_data(ok)) == 6


@pytest.mark.parametrize("full", [True, False])
def test_a_broken_symlink_to_an_image_is_named_or_skipped_and_counted(tmp_path, capsys, monkeypatch, full):
    """A symlinked image whose target was moved was left out without a word (a class folder of symlinks into a
    moved photo library lost all of them); it is now an unreadable image: named, or skipped and counted."""
    import gensis.data.sources as sources

    if not full:  # a folder too large to decode first: found by the file system check alone
        monkeypatch.setattr(sources, "FULL_DECODE_LIMIT", 2)
    data = tmp_path / f"links{full}"
    _images(data / "a")
    _images(data / "b")
    (data / "b" / "moved.jpg").symlink_to(tmp_path / "photos" / "moved.jpg")
    with pytest.raises(UserError, match=r"cannot read image .*b/moved.jpg: broken symbolic link \(its target "
                                        r".*photos/moved.jpg does not exist\); fix or remove it"):
        open_data(data)
    ds = open_data(data, skip_bad_images=True)
    assert len(ds) == 6 and "skipped 1 unreadable image of 7" in capsys.readouterr().err
    with pytest.raises(sources.BadImageError, match="broken symbolic link"):
        sources.decode_image(data / "b" / "moved.jpg")


def test_uint8_images_holding_0_and_1_are_refused_not_read_black(tmp_path):
    """Images in 0..1 cast to uint8 (or 0/1 masks) were read as 0..255: every image black, trained on without a
    word. The .npz and the Python API's arrays, checked by one function."""
    import gensis

    x = np.random.default_rng(0).random((6, 8, 8, 3))
    binary = np.round(x).astype(np.uint8)  # 0..1 images rounded to uint8
    np.savez(tmp_path / "b.npz", images=binary)
    hint = r"holds only the values 0 and 1, .* np.round\(images \* 255\).astype\(np.uint8\)"
    with pytest.raises(UserError, match=r"b.npz: 'images' " + hint):
        open_data(tmp_path / "b.npz")
    with pytest.raises(UserError, match=r"the image array " + hint):
        gensis.as_image_set(binary)
    scaled = np.round(x * 255).astype(np.uint8)
    np.savez(tmp_path / "s.npz", images=scaled, labels=np.arange(6) % 2)
    assert np.array_equal(open_data(tmp_path / "s.npz").get(0), scaled[0])
    assert np.array_equal(gensis.as_image_set(scaled[..., :1]).get(0), np.repeat(scaled[0, :, :, :1], 3, 2))


def test_an_npz_in_torchs_layout_is_read_as_the_api_reads_it(tmp_path):
    """images saved N×3×H×W (torch's layout, e.g. from a tensor) were refused in an .npz ('must be N×H×W or
    N×H×W×3') while gensis.as_image_set took the same array; both read it now, as the N×H×W×3 array."""
    import gensis

    nhwc = np.random.default_rng(0).integers(0, 256, (6, 8, 10, 3), dtype=np.uint8)
    np.savez(tmp_path / "nhwc.npz", images=nhwc, labels=np.arange(6) % 2)
    np.savez(tmp_path / "nchw.npz", images=nhwc.transpose(0, 3, 1, 2), labels=np.arange(6) % 2)
    np.savez(tmp_path / "grey.npz", images=nhwc[..., :1].transpose(0, 3, 1, 2))
    a, b = open_data(tmp_path / "nhwc.npz"), open_data(tmp_path / "nchw.npz")
    assert b.get(5).shape == (8, 10, 3) and np.array_equal(a.stack(), b.stack()) and a.identity == b.identity
    assert np.array_equal(open_data(tmp_path / "grey.npz").get(0), np.repeat(nhwc[0, :, :, :1], 3, 2))
    assert np.array_equal(gensis.as_image_set(nhwc.transpose(0, 3, 1, 2)).stack(), nhwc)
    np.savez(tmp_path / "rgba.npz", images=np.zeros((2, 4, 8, 8), np.uint8))  # N×4×H×W, all transparent
    assert open_data(tmp_path / "rgba.npz").stack().min() == 255  # over white, as an RGBA PNG reads
    np.savez(tmp_path / "two.npz", images=np.zeros((2, 2, 8, 8), np.uint8))
    with pytest.raises(UserError, match=r"must be N×H×W, N×H×W×3 or N×H×W×4 \(RGBA; or N×C×H×W\), got shape \(2, 2, 8"):
        open_data(tmp_path / "two.npz")


def test_npz_class_names_saved_as_bytes_or_objects(tmp_path):
    """'classes' saved as bytes (np.array([b'cat', ...]), h5py's and older numpy's strings) became the names
    "b'cat'", which match no folder's 'cat'; an object array of names was dropped without a word."""
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)

    def npz(name, classes):
        np.savez(tmp_path / name, images=images, labels=np.array([0, 1, 0, 1]), classes=classes)
        return tmp_path / name

    assert open_data(npz("bytes.npz", np.array([b"cat", "chat \u00e9".encode()]))).classes == ["cat", "chat \u00e9"]
    assert open_data(npz("str.npz", np.array(["cat", "dog"]))).classes == ["cat", "dog"]
    assert open_data(npz("ids.npz", np.array([7, 9]))).classes == ["7", "9"]
    with pytest.raises(UserError, match=r"'classes' is an object array, .* np.array\(names\)"):
        open_data(npz("obj.npz", np.array(["cat", "dog"], dtype=object)))
    with pytest.raises(UserError, match=r"'classes' must be one name per class"):
        open_data(npz("2d.npz", np.array([["cat"], ["dog"]])))


def test_npz_labels_given_as_class_names(tmp_path):
    """labels saved as names (np.array(['dog', 'cat', ...])) were refused ('must be integers, got <U3'); they are
    now the classes, in sorted order as a folder's, or those of 'classes' when it is given."""
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "names.npz", images=images, labels=np.array(["dog", "cat", "dog", "b\u00e9e"]))
    ds = open_data(tmp_path / "names.npz")
    assert ds.classes == ["b\u00e9e", "cat", "dog"] and ds.labels.tolist() == [2, 1, 2, 0]
    np.savez(tmp_path / "given.npz", images=images, labels=np.array([b"dog", b"cat", b"dog", b"cat"]),
             classes=np.array(["dog", "cat", "owl"]))
    ds = open_data(tmp_path / "given.npz")
    assert ds.classes == ["dog", "cat", "owl"] and ds.labels.tolist() == [0, 1, 0, 1] and ds.num_classes == 3
    np.savez(tmp_path / "unknown.npz", images=images, labels=np.array(["dog", "cat", "dog", "emu"]),
             classes=np.array(["dog", "cat"]))
    with pytest.raises(UserError, match=r"label 'emu' is not among 'classes' \(dog, cat\)"):
        open_data(tmp_path / "unknown.npz")


def test_an_empty_class_folder_is_named_once(tmp_path, capsys):
    """A class folder without images (not yet filled, or only .txt/.DS_Store files) was dropped without a word:
    the user counted 3 classes, gensis read 2. One warning line names it."""
    data = tmp_path / "three"
    _images(data / "a")
    _images(data / "b")
    (data / "c").mkdir()
    (data / "c" / ".DS_Store").write_bytes(b"\0")
    (data / "c" / "README.txt").write_text("to do")
    ds = open_data(data)
    assert ds.classes == ["a", "b"] and len(ds) == 6
    err = capsys.readouterr().err
    assert f"{data}: 1 class folder (c/) holds no image and is left out: 2 classes are read" in err
    open_data(data)
    assert "class folder" not in capsys.readouterr().err  # said once
    flat = _images(tmp_path / "flat")
    (flat / "empty").mkdir()
    open_data(flat)  # unlabelled images and an empty folder: no class folders, nothing to say
    assert "class folder" not in capsys.readouterr().err


def test_class_names_match_whatever_their_unicode_form(tmp_path):
    """train/café/ typed on Linux (NFC) and val/café/ from a macOS zip (NFD: 'e' + U+0301) were two classes:
    'class 'café' is not among the training classes (café)'; names are compared in NFC now, folders and .npz."""
    import gensis
    from gensis.data.sources import match_classes

    nfc, nfd = "caf\u00e9", "cafe\u0301"
    _images(tmp_path / "tv" / "train" / nfc)
    _images(tmp_path / "tv" / "train" / "tea")
    _images(tmp_path / "tv" / "val" / nfd, n=2)
    val = open_data(f"{tmp_path / 'tv'}@val")
    assert val.classes == [nfc, "tea"] and val.labels.tolist() == [0, 0]
    assert len(open_data(f"{tmp_path / 'tv'}@all")) == 8
    np.savez(tmp_path / "test.npz", images=np.full((2, 8, 8), 7, np.uint8), labels=np.array([nfd, "tea"]))
    test = match_classes(open_data(f"{tmp_path / 'tv'}@train"), open_data(tmp_path / "test.npz"))
    assert test.classes == [nfc, "tea"] and test.labels.tolist() == [0, 1]
    api = gensis.as_image_set(np.full((2, 8, 8), 7, np.uint8), labels=[1, 0])
    api.classes = ["tea", nfd]  # a user's own ImageSet, names as typed
    assert match_classes(val, api).labels.tolist() == [0, 1]  # its café is val's class 0


def test_npz_groups_given_as_slide_names(tmp_path):
    """groups saved as slide ids (np.array(['TCGA-A1-0001', ...])) were refused ('must be integers'); each name is
    now one group, so the split is by slide as with integer groups."""
    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8), dtype=np.uint8)
    slides = np.array([f"TCGA-{i % 4}" for i in range(12)])
    np.savez(tmp_path / "names.npz", images=images, groups=slides)
    np.savez(tmp_path / "ids.npz", images=images, groups=np.arange(12) % 4)
    ds = open_data(tmp_path / "names.npz")
    assert ds.groups.tolist() == (np.arange(12) % 4).tolist()
    for split in ("train", "val"):
        a, b = open_data(tmp_path / "names.npz", split, 0.25), open_data(tmp_path / "ids.npz", split, 0.25)
        assert np.array_equal(a.stack(), b.stack()) and len(set(a.groups.tolist())) in (1, 3)


def test_images_without_an_extension_are_counted(tmp_path, capsys):
    """Files named by a hash or a scraper (no extension) were left out without a word even when they are images
    (a class of them: the class was gone); one line now counts them by format. Other files without an
    extension (README, LICENSE) are no images and are not counted."""
    data = tmp_path / "scraped"
    _images(data / "a")
    _images(data / "b")
    Image.new("RGB", (8, 8)).save(data / "b" / "3f9a0c", format="JPEG")
    (data / "c").mkdir()
    Image.new("RGB", (8, 8)).save(data / "c" / "9e1d2b", format="PNG")
    (data / "a" / "LICENSE").write_text("MIT")
    assert open_data(data).classes == ["a", "b"]
    err = capsys.readouterr().err
    assert (f"left out 2 image files of {data} without an extension (JPEG 1, PNG 1; first: {data / 'b' / '3f9a0c'}): "
            f"gensis reads images by extension; name them with theirs (.png, .jpg ...) to use them") in err
    assert "class folder" not in err and err.count("\n") == 1  # c/ is said in that line, not as an empty class


def test_a_dark_16_bit_pgm_reads_as_the_same_16_bit_png(tmp_path):
    """A 16-bit PGM whose values are all below 256 (a dark depth or thermal frame) was read as 8-bit data, up to
    257x brighter than the same image saved as a 16-bit PNG; both now read 0..65535 -> 0..255."""
    from gensis.data.sources import decode_image

    a = (np.arange(64).reshape(8, 8) * 3).astype(np.uint16)  # 0..189 of 65535
    (tmp_path / "dark.pgm").write_bytes(b"P5\n8 8\n65535\n" + a.astype(">u2").tobytes())
    Image.fromarray(a).save(tmp_path / "dark.png")
    bright = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
    (tmp_path / "bright.pgm").write_bytes(b"P5\n8 8\n65535\n" + bright.astype(">u2").tobytes())
    Image.fromarray(bright).save(tmp_path / "bright.png")
    for name in ("dark", "bright"):
        pgm, png = decode_image(tmp_path / f"{name}.pgm"), decode_image(tmp_path / f"{name}.png")
        assert np.array_equal(pgm, png), name
    assert decode_image(tmp_path / "dark.png").max() == 1


def test_a_transparent_colour_of_an_rgb_or_grey_png_is_white_as_in_rgba(tmp_path):
    """An RGB or grey PNG with one transparent colour (tRNS: logos, icons) kept that colour (black here) where an
    RGBA or palette PNG of the same picture was white; every transparent pixel is now composited over white."""
    from gensis.data.sources import decode_image

    a = np.zeros((4, 4, 3), np.uint8)
    a[:2] = (10, 200, 30)
    Image.fromarray(a).save(tmp_path / "trns.png", transparency=(0, 0, 0))
    rgba = np.concatenate([a, np.where(a.any(2, keepdims=True), 255, 0).astype(np.uint8)], 2)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(a[..., 1]).save(tmp_path / "grey.png", transparency=0)
    expected = np.where(a.any(2, keepdims=True), a, 255)
    assert np.array_equal(decode_image(tmp_path / "rgba.png"), expected)
    assert np.array_equal(decode_image(tmp_path / "trns.png"), expected)
    assert np.array_equal(decode_image(tmp_path / "grey.png")[..., 0], expected[..., 1])


def test_a_broken_symlink_to_a_class_folder_is_named(tmp_path, capsys):
    """A class folder linked from a disk that is gone (a broken symbolic link) was dropped without a word, with
    all its images; one warning line names it."""
    data = tmp_path / "linked"
    _images(data / "a")
    _images(data / "b")
    (data / "c").symlink_to(tmp_path / "unmounted" / "c")
    assert open_data(data).classes == ["a", "b"]
    err = capsys.readouterr().err
    assert f"left out 1 broken symbolic link of {data} (first: {data / 'c'}, whose target " in err
    assert "restore the target or remove the link" in err and err.count("\n") == 1


def test_an_npz_named_in_capitals_is_read_and_an_npy_says_how_to_save_it(tmp_path):
    """DATA.NPZ (a Windows or macOS share) was an 'unsupported dataset'; an .npy got no word on what to do."""
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "lower.npz", images=images)
    (tmp_path / "lower.npz").rename(tmp_path / "DATA.NPZ")
    assert np.array_equal(open_data(tmp_path / "DATA.NPZ").stack()[..., 0], images)
    np.save(tmp_path / "x.npy", images)
    with pytest.raises(UserError, match=r"unsupported dataset .*x.npy.* \(an .npy holds one array: save "
                                        r"np.savez\('data.npz', images=images, labels=labels\)\)"):
        open_data(tmp_path / "x.npy")


def test_numbered_class_folders_match_integer_labels_by_number(tmp_path, capsys):
    """Class folders 0/ ... 11/ sort as 0, 1, 10, 11, 2, ...: a test .npz with integer labels 0..11 was matched by
    position (its label 2 read as folder 10/), every class from 2 on scored against the wrong one, with only a
    warning line; label k is now the folder named k, both ways round."""
    from gensis.data.sources import match_classes

    rng = np.random.default_rng(0)
    for k in range(12):
        (tmp_path / "digits" / str(k)).mkdir(parents=True)
        Image.fromarray(np.full((4, 4, 3), 20 * k, np.uint8)).save(tmp_path / "digits" / str(k) / "0.png")
    folder = open_data(tmp_path / "digits")
    assert folder.classes[:4] == ["0", "1", "10", "11"]
    labels = rng.permutation(12)
    np.savez(tmp_path / "test.npz", images=np.stack([np.full((4, 4), 20 * k, np.uint8) for k in labels]),
             labels=labels)
    npz = open_data(tmp_path / "test.npz")
    test = match_classes(folder, npz)
    assert [test.classes[c] for c in test.labels] == [str(k) for k in labels]
    train = match_classes(npz, folder)  # the .npz's integers are the classes; the folder's names say which
    assert train.labels.tolist() == [int(folder.classes[c]) for c in folder.labels]
    assert "has no class names" not in capsys.readouterr().err
    np.savez(tmp_path / "more.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.array([3, 12]))
    with pytest.raises(UserError, match=r"label 12 of more is no class of digits \(its classes are the numbers "
                                        r"0, 1, 2, .*\)"):
        match_classes(folder, open_data(tmp_path / "more.npz"))


@pytest.mark.parametrize("held_out", ["valid", "validation"])
def test_a_roboflow_or_kaggle_split_folder_keeps_its_split(tmp_path, capsys, held_out):
    """train/ + valid/ (Roboflow) or train/ + validation/ (Kaggle) was not a folder with its own split: refused
    ('train/a/0.png would be left out'), and with a test/ beside them test/ was held out and valid/ not read."""
    data = tmp_path / held_out
    for split, n in (("train", 4), (held_out, 2), ("test", 3)):
        for c in ("a", "b"):
            _images(data / split / c, n=n)
    val = open_data(f"{data}@val")
    assert len(val) == 4 and all(p.parent.parent.name == held_out for p in val.paths)
    assert len(open_data(f"{data}@train")) == 8 and len(open_data(f"{data}@all")) == 12
    assert f"train/ and {held_out}/ (held out); not read: test/" in capsys.readouterr().err


def test_copies_of_one_photo_on_both_sides_of_the_split_are_counted(tmp_path, capsys):
    """A photo saved twice in its class folder ('img.jpg', 'img (1).jpg') lands in train and val alike; k-NN then
    finds the held-out copy as itself, inflating the score without a word. One line now counts such images."""
    data = tmp_path / "photos"
    _images(data / "a", n=10)
    _images(data / "b", n=10)
    for i in range(10):  # every image of a/ twice: some copies fall on both sides of the 80/20 split
        (data / "a" / f"{i} (1).png").write_bytes((data / "a" / f"{i}.png").read_bytes())
    val = open_data(data, "val")
    train = open_data(data, "train")
    folder = val.parent  # the whole folder: its paths
    def photo(p):  # the photo a file is a copy of
        return p.parent.name, p.name.replace(" (1)", "")

    in_train = {photo(folder.paths[i]) for i in train.indices}
    both = sum(1 for i in val.indices if photo(folder.paths[i]) in in_train)
    assert both > 0
    err = capsys.readouterr().err
    assert f"{data}: {both} of the {len(val)} held-out (val) images have the same bytes as a training image" in err
    assert err.count("held-out (val)") == 1  # once for both splits
    open_data(_images(tmp_path / "unique" / "a", n=10).parent, "val")
    assert "held-out" not in capsys.readouterr().err


def test_a_held_out_class_whose_train_folder_is_empty_says_so(tmp_path):
    """train/b/ empty and val/b/ filled: 'class 'b' is not among the training classes (a)' while the user could
    see train/b/; the line now says that train/b/ holds no image."""
    _images(tmp_path / "tv" / "train" / "a")
    (tmp_path / "tv" / "train" / "b").mkdir()
    _images(tmp_path / "tv" / "val" / "a", n=1)
    _images(tmp_path / "tv" / "val" / "b", n=1)
    with pytest.raises(UserError, match=r"class 'b' is not among the training classes \(a\); train/b/ holds no "
                                        r"image$"):
        open_data(f"{tmp_path / 'tv'}@val")


def test_an_image_too_large_for_pil_says_to_downscale_it(tmp_path, monkeypatch):
    """A photo above PIL's pixel limit (a gigapixel panorama, a scan) was 'cannot read image X:
    DecompressionBombError: ... could be decompression bomb DOS attack', then 'fix or remove it'; the line now
    says it is too large and to downscale it."""
    from PIL import Image as PILImage

    _images(tmp_path / "big" / "a")
    Image.new("RGB", (40, 30)).save(tmp_path / "big" / "a" / "panorama.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 500)  # 1200 pixels: above twice the limit
    with pytest.raises(UserError, match=r"panorama.png: too large to decode \(Image size \(1200 pixels\) exceeds "
                                        r"limit of 1000 pixels, PIL's guard against decompression bombs\): "
                                        r"downscale it"):
        open_data(tmp_path / "big")


def test_rgba_reads_the_same_from_a_folder_an_npz_an_array_and_a_dataset(tmp_path):
    """Three rules for the same RGBA picture: a PNG in a folder was composited over white, a torch dataset's RGBA
    array lost its alpha (transparent pixels kept their colour, black here) and an .npz of RGBA images was refused.
    Now every path composites over white, so they read identically."""
    import torch

    from gensis.data.torch_datasets import as_image_set

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (2, 6, 6, 4), dtype=np.uint8)
    rgba[:, :2, :, :3] = 0
    rgba[:, :2, :, 3] = 0  # fully transparent black rows
    rgba[:, 2, :, 3] = 128  # half transparent
    for c, im in zip("ab", rgba):
        (tmp_path / "f" / c).mkdir(parents=True)
        Image.fromarray(im, "RGBA").save(tmp_path / "f" / c / "0.png")
    np.savez(tmp_path / "x.npz", images=rgba, labels=np.array([0, 1]))
    folder = open_data(str(tmp_path / "f"), "all").stack()
    assert folder[:, :2].min() == 255 and not np.array_equal(folder[:, 2], rgba[:, 2, :, :3])
    assert np.array_equal(open_data(str(tmp_path / "x.npz"), "all").stack(), folder)
    assert np.array_equal(as_image_set(rgba).stack(), folder)
    assert np.array_equal(as_image_set(torch.from_numpy(rgba).permute(0, 3, 1, 2)).stack(), folder)
    assert np.array_equal(as_image_set([(im, 0) for im in rgba]).stack(), folder)  # a dataset of arrays


def test_all_of_labelled_train_and_a_flat_val_says_it_is_unlabelled(tmp_path, capsys):
    """train/ with class folders beside a flat val/ (unlabelled held-out images): DATA@all, both together, had no
    labels without a word (a map drawn uncoloured, a k-NN refused for want of labels that train/ has)."""
    for c in "ab":
        _images(tmp_path / "d" / "train" / c)
    _images(tmp_path / "d" / "val", n=2)
    capsys.readouterr()
    d = open_data(str(tmp_path / "d"), "all")
    assert len(d) == 8 and d.labels is None
    err = capsys.readouterr().err
    assert "gensis: warning: d@all is unlabelled: val/ holds no class folders while train/ does (for labelled " \
           "images use d@train" in err, err
    assert open_data(str(tmp_path / "d"), "train").labels is not None and not capsys.readouterr().err
    for c in "ab":  # both labelled: no word
        _images(tmp_path / "e" / "train" / c)
        _images(tmp_path / "e" / "val" / c, n=1)
    assert open_data(str(tmp_path / "e"), "all").labels is not None and "warning" not in capsys.readouterr().err


def test_an_image_above_pils_bomb_threshold_is_one_gensis_line(tmp_path, monkeypatch):
    """A 90-megapixel photo printed PIL's DecompressionBombWarning (two lines naming PIL's source file); now one
    gensis warning line, once per process, saying what such images cost. Twice the threshold stays refused."""
    import subprocess
    import sys

    for c in "ab":
        _images(tmp_path / "d" / c, n=2, size=40)
    _images(tmp_path / "e" / "a", n=1, size=50)
    script = f"""
import sys
from PIL import Image
Image.MAX_IMAGE_PIXELS = 1000  # a 40x40 image stands for a 90-megapixel one, 50x50 for twice the threshold
from gensis.cli.main import main
sys.exit(main(sys.argv[1:]))
"""
    knn = [sys.executable, "-c", script, "eval", "knn", "--encoder", "pixels", "--k", "1", "--threads", "1"]
    r = subprocess.run([*knn, "--train", f"{tmp_path / 'd'}@all", "--test", f"{tmp_path / 'd'}@all"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "DecompressionBomb" not in r.stderr and r.stderr.count("is 1,600 pixels (above PIL's 1,000)") == 1, r.stderr
    r = subprocess.run([*knn, "--train", f"{tmp_path / 'e'}@all", "--test", f"{tmp_path / 'd'}@all"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "too large to decode" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
