"""Builders of tiny augmentation banks without a trained E-LDM (the ``fake`` generator), shared by the bank tests
(``tests/bank/conftest.py``) and the tests that train on a bank (``tests/train/test_ddp_resume.py``).

``build_bank(npz, out)`` makes a complete bank of the train split of ``npz`` in one single-process run; pass the
data settings (``data.limit=...``, ``data.val_fraction=...``) of the run that will use it, since
``pretrain --bank`` refuses a bank made from another split (``BankReader.check_dataset``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gensis.config import load_config

N_IMAGES = 100  # make_npz's default: 80 after the train split
# the settings every test bank shares (K=2, two alphas, small shards so there are several, raw-free png)
BASE_OVERRIDES = ["gen.num_generative=2", "gen.alphas=[0.3,0.7]", "storage.shard_size=16", "run.batch_size=7",
                  "run.encode_batch_size=16", "run.threads=1", "data.limit=null"]


def bank_cfg(*overrides: str) -> dict:
    """The bank ``smoke`` preset with ``BASE_OVERRIDES`` and then ``overrides``."""
    return load_config("bank", "smoke", [*BASE_OVERRIDES, *overrides])


def make_npz(path: Path, n: int = N_IMAGES, size: int = 8, seed: int = 0) -> Path:
    """An .npz of ``n`` random colour images (size × size) with labels and groups."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    # 50 groups ("slides") of one class each: the train split (by group, stratified) keeps 80 of 100 images
    np.savez(path, images=images, labels=np.arange(n) % 5, groups=np.arange(n) % 50)
    return path


def fake_generator():
    """The deterministic stand-in generator every test bank is made with (16×16 images, 8-d embeddings)."""
    from gensis.bank.fake import FakeGenerator

    return FakeGenerator(image_size=16, dim=8)


def build_bank(npz: Path | str, out: Path, *overrides: str, generator=None) -> Path:
    """A complete bank of ``npz``'s train split at ``out``, in one uninterrupted single-process run."""
    from gensis.bank import generate_bank

    res = generate_bank(bank_cfg(*overrides), str(npz), out, generator=generator or fake_generator(), quiet=True)
    assert res.complete
    return Path(out)
