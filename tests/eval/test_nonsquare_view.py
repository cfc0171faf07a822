"""Non-square images are seen at evaluation as in pretraining: short side resized, centre crop (DINO's eval
Resize + CenterCrop), never stretched; square images give exactly the features they gave before."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from gensis.data.loader import ImageBatches
from gensis.data.sources import ArrayImageSet, FolderImageSet
from gensis.eval.features import FeatureCache, FeatureSpec, dataset_features, extract_features
from gensis.models.encoder import load_encoder, normalize
from gensis.rundir import save_tensors

S = 28  # the demo ViT's (and the pixel baseline's) input size


def _wide(s: int = S) -> np.ndarray:
    """(s, 3s, 3): left third red, right third blue, the centre s × s square a checkerboard."""
    img = np.zeros((s, 3 * s, 3), np.uint8)
    img[:, :s] = (255, 0, 0)
    img[:, 2 * s:] = (0, 0, 255)
    yy, xx = np.mgrid[:s, :s]
    img[:, s:2 * s] = (((yy // 4 + xx // 4) % 2) * 255)[..., None]
    return img


def _folder(tmp_path, name: str, imgs: list[np.ndarray]) -> FolderImageSet:
    d = tmp_path / name
    d.mkdir()
    paths = []
    for i, im in enumerate(imgs):
        paths.append(d / f"{i}.png")
        Image.fromarray(im).save(paths[-1])
    return FolderImageSet(paths, name=name)


@pytest.fixture(scope="module", params=["random", "pixels"])
def enc(request):
    return load_encoder(request.param)


def test_wide_image_feature_is_its_centre_crop(enc, tmp_path):
    wide = _wide()
    centre = np.ascontiguousarray(wide[:, S:2 * S])
    f_wide = extract_features(enc, _folder(tmp_path, "wide", [wide]))
    f_centre = extract_features(enc, _folder(tmp_path, "centre", [centre]))
    np.testing.assert_array_equal(f_wide, f_centre)
    stretched = dataset_features(enc, _folder(tmp_path, "wide2", [wide]), FeatureSpec("cls", resize="square"))
    assert np.abs(stretched - f_centre).max() > 10 * max(1e-6, np.abs(f_wide - f_centre).max())
    # the encoder's own __call__ (E-LDM conditioning, bank scores) and a tall image see the same crop
    x = torch.from_numpy(wide).permute(2, 0, 1)[None]
    c = torch.from_numpy(centre).permute(2, 0, 1)[None]
    torch.testing.assert_close(enc(x), enc(c), rtol=0, atol=0)
    torch.testing.assert_close(enc(x.transpose(-1, -2)), enc(c.transpose(-1, -2)), rtol=0, atol=0)


def test_larger_wide_image_is_cropped_not_stretched(tmp_path):
    enc = load_encoder("random")
    wide = _wide(2 * S)  # resized to 28 × 84 first, then cropped
    centre = np.ascontiguousarray(wide[:, 2 * S:4 * S])
    f_wide, f_centre, f_stretch = (dataset_features(enc, _folder(tmp_path, n, [im]), FeatureSpec("cls", resize=r))
                                   for n, im, r in (("w", wide, "crop"), ("c", centre, "crop"), ("s", wide, "square")))
    cos = lambda a, b: float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cos(f_wide, f_centre) > 0.99 > cos(f_stretch, f_centre)


def test_square_images_unchanged(enc):
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 40, 40, 3), dtype=np.uint8))
    ds = ArrayImageSet(x.numpy())
    before = dataset_features(enc, ds, FeatureSpec("cls", resize="square"))  # the old (stretching) path
    np.testing.assert_array_equal(extract_features(enc, ds), before)
    xb = x.permute(0, 3, 1, 2)
    old = TF.resize(xb, [S, S], antialias=True).float().div(255)  # Encoder.__call__ before crops existed
    old = old.flatten(1) if enc.model is None else enc.model(normalize(old)).float()
    torch.testing.assert_close(enc(xb), old, rtol=0, atol=0)


def test_cache_key_changes_so_stretched_features_are_not_reused(tmp_path):
    enc = load_encoder("random")
    ds = _folder(tmp_path, "wide", [_wide()])
    cache = FeatureCache(tmp_path / "cache")
    stretched = dataset_features(enc, ds, FeatureSpec("cls", resize="square"), cache=cache)
    assert FeatureSpec().key(enc) != FeatureSpec(resize="square").key(enc)
    assert not np.array_equal(extract_features(enc, ds, cache=cache), stretched)


def test_eldm_embeddings_cache_recomputed_when_older_than_crops(tmp_path):
    from gensis.eldm.train import cached_embeddings

    enc = load_encoder("random")
    ds = _folder(tmp_path, "wide", [_wide()])
    (tmp_path / "cache").mkdir()
    stale = torch.full((1, enc.dim), 7.0)
    save_tensors(tmp_path / "cache" / "embeddings-train.safetensors", {"embeddings": stale},
                 {"encoder": enc.identity, "data": ds.identity})  # a cache written when images were stretched
    e = cached_embeddings(tmp_path / "cache", enc, ds, "cpu", 4)
    np.testing.assert_array_equal(e.numpy(), extract_features(enc, ds))


def test_array_batches_crop_non_square():
    wide = _wide(8)[None]  # (1, 8, 24, 3)
    (batch, _), = ImageBatches(ArrayImageSet(wide), 1, load_size=8, shuffle=False).epoch(0)
    np.testing.assert_array_equal(batch[0].permute(1, 2, 0).numpy(), wide[0, :, 8:16])
