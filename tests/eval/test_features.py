"""The feature layer: kinds, sizes, multi-scale, the timm encoder spec and the on-disk cache."""

import os

import numpy as np
import pytest
import torch

from gensis.data.sources import ArrayImageSet
from gensis.errors import UserError
from gensis.eval.features import FeatureCache, FeatureSpec, dataset_features, encode, gem, target_shape
from gensis.models.encoder import load_encoder
from gensis.rundir import save_tensors


def _images(n=5, h=30, w=22, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 255, (n, 3, h, w), dtype=np.uint8))


def test_kinds_and_shapes():
    enc = load_encoder("random")  # demo ViT: patch 7, 192-d
    x = _images()
    cls = encode(enc, x, FeatureSpec("cls", size=28))
    patches = encode(enc, x, FeatureSpec("patch", size=28))
    both = encode(enc, x, FeatureSpec("cls_gem", size=28))
    assert cls.shape == (5, 192) and patches.shape == (5, 4, 4, 192) and both.shape == (5, 384)
    torch.testing.assert_close(both[:, :192], cls)
    torch.testing.assert_close(both[:, 192:], gem(patches, 4.0))
    # GeM with p=1 on positive tokens is the mean
    torch.testing.assert_close(gem(patches.abs() + 1, 1.0), (patches.abs() + 1).mean((1, 2)))
    # the CLS token is the backbone's own output
    torch.testing.assert_close(cls, enc(x), rtol=1e-4, atol=1e-5)


def test_sizes_keep_whole_patches_and_aspect():
    enc = load_encoder("random")
    assert target_shape(480, 854, FeatureSpec("patch", size=100, resize="max"), enc) == (56, 98)
    assert target_shape(480, 854, FeatureSpec("patch", resize="none"), enc) == (476, 854)
    assert target_shape(20, 30, FeatureSpec("cls", size=50, resize="max"), enc) == (14, 28)  # never enlarges
    with pytest.raises(UserError, match="multi-scale"):
        FeatureSpec("patch", scales=(1.0, 0.5))
    with pytest.raises(UserError, match="kind"):
        FeatureSpec("nope")


def test_multiscale_is_the_mean_over_scales():
    enc = load_encoder("random")
    x = _images(h=56, w=56)
    ms = encode(enc, x, FeatureSpec("cls", size=56, scales=(1.0, 0.5)))
    one = encode(enc, x, FeatureSpec("cls", size=56))
    half = encode(enc, torch.nn.functional.interpolate(x.float(), size=(28, 28), mode="bilinear",
                                                       align_corners=False).round().clamp(0, 255).to(torch.uint8),
                  FeatureSpec("cls", size=28))
    assert not torch.allclose(ms, one)
    torch.testing.assert_close(ms, (one + half) / 2, rtol=0.05, atol=0.05)  # the half scale is not re-quantized


def test_dataset_features_are_cached_and_reused(tmp_path, monkeypatch):
    imgs = np.random.default_rng(1).integers(0, 255, (9, 12, 12, 3), dtype=np.uint8)
    ds = ArrayImageSet(imgs, name="toy")
    enc = load_encoder("random")
    cache = FeatureCache(tmp_path / "c")
    f1 = dataset_features(enc, ds, FeatureSpec("cls_gem", size=14), batch_size=4, cache=cache)
    assert f1.shape == (9, 384) and len(list((tmp_path / "c").glob("*.safetensors"))) == 1
    import gensis.eval.features as feats

    monkeypatch.setattr(feats, "encode", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    f2 = dataset_features(enc, ds, FeatureSpec("cls_gem", size=14), cache=cache)
    np.testing.assert_array_equal(f1, f2)
    monkeypatch.undo()
    f3 = dataset_features(enc, ds, FeatureSpec("cls_gem", size=21), cache=cache)  # another size: a new entry
    assert len(list((tmp_path / "c").glob("*.safetensors"))) == 2 and not np.allclose(f1, f3)
    # a damaged cache file is recomputed
    for p in (tmp_path / "c").glob("*.safetensors"):
        p.write_bytes(b"garbage")
    # (recomputed in batches of another size: fp32 kernels may round differently, ~2e-6 seen on an AMX CPU)
    np.testing.assert_allclose(dataset_features(enc, ds, FeatureSpec("cls_gem", size=14), cache=cache), f1,
                               rtol=1e-5, atol=1e-5)


def test_timm_encoder_with_a_weights_file(tmp_path):
    import timm

    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32,
                          dynamic_img_size=True)
    w = tmp_path / "w.safetensors"
    save_tensors(w, {f"backbone.{k}": v for k, v in m.state_dict().items()})  # a prefix, as DINO's checkpoints
    enc = load_encoder(f"timm:vit_tiny_patch16_224={w}", image_size=32)
    assert enc.patch_size == 16 and enc.dim == 192
    x = torch.rand(2, 3, 32, 32)
    from gensis.models.encoder import normalize

    torch.testing.assert_close(enc.tokens(x)[0], m.forward_features(normalize(x))[:, 0])
    pt = tmp_path / "w.pth"
    torch.save({"teacher": m.state_dict()}, pt)
    assert load_encoder(f"timm:vit_tiny_patch16_224={pt}", image_size=32).dim == 192
    with pytest.raises(UserError, match="not found"):
        load_encoder(f"timm:vit_tiny_patch16_224={tmp_path / 'nope.pth'}")
    with pytest.raises(UserError, match="does not fit"):
        load_encoder(f"timm:vit_small_patch16_224={w}", image_size=32)
    with pytest.raises(UserError, match="NAME=WEIGHTS"):
        load_encoder("timm:vit_tiny_patch16_224")
    # weights with LayerScale (UNI-style pathology ViTs trained with init_values) named by timm's plain ViT, which
    # has no ls1/ls2.gamma: they were refused ("no place in it"); now the ViT is built with LayerScale and the
    # file's gains are loaded, giving the original model's features
    ls = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, init_values=1e-5,
                           dynamic_img_size=True).eval()
    with torch.no_grad():
        for n, p in ls.named_parameters():
            if n.endswith("gamma"):
                p.copy_(torch.randn_like(p))  # gains far from init_values: features differ unless they are loaded
    save_tensors(w, ls.state_dict())
    enc = load_encoder(f"timm:vit_tiny_patch16_224={w}", image_size=32)
    with torch.no_grad():
        cls, patches = enc.tokens(x)
        ref = ls.forward_features(normalize(x))  # (B, 1 + N, D)
    torch.testing.assert_close(cls, ref[:, 0])
    torch.testing.assert_close(patches.flatten(1, 2), ref[:, 1:])  # (B, h, w, D) -> (B, N, D)
    # ... and a file missing one of the gains is still refused
    state = ls.state_dict()
    del state["blocks.3.ls2.gamma"]
    save_tensors(w, state)
    with pytest.raises(UserError, match=r"weights missing \(e.g. blocks\.3\.ls2\.gamma"):
        load_encoder(f"timm:vit_tiny_patch16_224={w}", image_size=32)


def test_pixel_patches():
    enc = load_encoder("pixels")
    x = _images(2, 16, 24)
    p = encode(enc, x, FeatureSpec("patch", resize="none"))
    assert p.shape == (2, 2, 3, 192)
    np.testing.assert_allclose(p[0, 1, 2].numpy(), (x[0, :, 8:16, 16:24].float() / 255).numpy().ravel(), rtol=1e-6)


def test_cache_removes_what_a_killed_evaluation_left(tmp_path):
    """A kill while the cache file was written left its temporary file in the cache folder for good (the size of
    the features: gigabytes for ImageNet); the next write removes it."""
    import subprocess
    import sys

    cache = FeatureCache(tmp_path / "c")
    (tmp_path / "c").mkdir()
    code = ("import sys; from gensis.rundir import temp_path; p = temp_path(sys.argv[1]); p.write_bytes(b'x' * 64); "
            "print(p)")
    left = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c" / "f.safetensors")], capture_output=True,
                          text=True, check=True).stdout.strip()  # its process has ended
    cache.put({"k": 1}, np.zeros((2, 3), np.float32))
    assert not os.path.exists(left)
    assert cache.get({"k": 1}).shape == (2, 3)


def test_cache_sees_an_edited_image_under_a_relabelled_split(tmp_path):
    """A test split matched to the training classes by name (a relabelled subset of a folder) was keyed by file
    names and sizes only: an image rewritten in place with as many bytes (BMP) got the old features back."""
    import time

    from PIL import Image

    from gensis.eval.common import open_train_test

    for root, classes in ((tmp_path / "tr", ("cat", "dog", "fox")), (tmp_path / "te", ("cat", "fox"))):
        for c in classes:
            (root / c).mkdir(parents=True)
            for i in range(5):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / c / f"{i}.bmp")
    _, test_ds = open_train_test(str(tmp_path / "tr"), str(tmp_path / "te@val"), 0.4, 0)
    assert type(test_ds).__name__ == "RelabelledImageSet"
    enc, cache = load_encoder("pixels", image_size=8), FeatureCache(tmp_path / "cache")
    before = dataset_features(enc, test_ds, cache=cache)
    path = test_ds.parent.parent.paths[int(test_ds.parent.indices[0])]
    size = os.path.getsize(path)
    time.sleep(0.01)
    Image.fromarray(np.full((8, 8, 3), 255, np.uint8)).save(path)
    assert os.path.getsize(path) == size
    after = dataset_features(enc, test_ds, cache=cache)
    assert not np.allclose(before[0], after[0])


def test_a_cache_that_cannot_be_written_is_said_once(tmp_path, capsys):
    """`eval ... --cache DIR` with DIR on a read-only or full disk computed the features again on every run
    without a word; the features are still returned, and one warning line says why nothing is kept."""
    enc = load_encoder("pixels", image_size=8)
    (tmp_path / "file").write_text("x")
    cache = FeatureCache(tmp_path / "file" / "cache")  # under a file: every write fails (as on a read-only disk)
    for seed in (1, 2):  # two feature sets, one warning
        imgs = np.random.default_rng(seed).integers(0, 255, (6, 12, 12, 3), dtype=np.uint8)
        f = dataset_features(enc, ArrayImageSet(imgs, name="toy"), FeatureSpec("cls"), batch_size=4, cache=cache)
        assert len(f) == 6
    err = [line for line in capsys.readouterr().err.splitlines() if "feature cache" in line]
    assert len(err) == 1 and "cannot be written" in err[0] and str(tmp_path / "file" / "cache") in err[0], err
