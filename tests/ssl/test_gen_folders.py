"""Gen- views on an image folder whose images differ in size (the usual case for a user's own photos)."""

import numpy as np
import torch
from PIL import Image

import gensis
from gensis.data.loader import ImageBatches
from gensis.data.sources import open_data
from gensis.ssl.gen import GenViews


def _mixed_folder(root, n=12):
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = [(20, 20), (9, 30), (40, 13), (1, 1)][i % 4]
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"c{i % 2}" / f"{i}.png")
    return root


def test_pixel_secondaries_are_loaded_like_the_batches(tmp_path):
    ds = open_data(_mixed_folder(tmp_path / "imgs"), "all")
    loader = ImageBatches(ds, 4, load_size=16, shuffle=False)
    batches = list(loader.epoch(0))
    cfg = gensis.make_config("pretrain", "smoke", {"gen.interp": "pixel"})
    gen = GenViews(cfg, ds, None, None, seed=0)
    images, idx = batches[0]
    got = gen.real(np.arange(len(ds)), images)  # was: torch.stack of images of different sizes
    want = torch.cat([b for b, _ in batches])
    assert torch.equal(got, want)
    img_int, img2, alpha = gen.interpolation(idx.numpy(), images)
    assert img_int.shape == img2.shape == images.shape and alpha.shape == (4,)


def test_pretrain_with_pixel_interpolation_on_a_folder_of_mixed_sizes(tmp_path):
    run = gensis.pretrain(str(_mixed_folder(tmp_path / "imgs")) + "@all", tmp_path / "run", preset="smoke",
                          interp="pixel", overrides={"optim.batch_size": 4, "optim.epochs": 1,
                                                     "train.threads": 1, "train.amp": "off"}, quiet=True)
    assert (run / "teacher_backbone.safetensors").is_file()
