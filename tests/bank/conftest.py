"""Shared pieces of the bank tests: a tiny dataset with groups, the fake generator, a reference bank."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gensis.config import load_config

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")
N_IMAGES = 100  # 80 after the train split
# the settings every test bank shares (K=2, two alphas, small shards so there are several, raw-free png)
BASE_OVERRIDES = ["gen.num_generative=2", "gen.alphas=[0.3,0.7]", "storage.shard_size=16", "run.batch_size=7",
                  "run.encode_batch_size=16", "run.threads=1", "data.limit=null"]


@pytest.fixture(scope="session")
def base_overrides() -> list[str]:
    return list(BASE_OVERRIDES)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny ops: OpenMP spinning on a shared 2-core box costs more than it saves


def _bank_cfg(*overrides: str) -> dict:
    return load_config("bank", "smoke", [*BASE_OVERRIDES, *overrides])


@pytest.fixture(scope="session")
def bank_cfg():
    """bank_cfg("gen.seed=3", ...) -> the tests' config dict."""
    return _bank_cfg


def _make_npz(path: Path, n: int = N_IMAGES, size: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(n) % 5, groups=np.arange(n) % 4)
    return path


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    return _make_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture(scope="session")
def make_npz():
    """make_npz(path, n=100, size=8, seed=0) -> path of an .npz with images, labels and groups."""
    return _make_npz


@pytest.fixture(scope="session")
def fake():
    from gensis.bank.fake import FakeGenerator

    return FakeGenerator(image_size=16, dim=8)


@pytest.fixture(scope="session")
def reference_bank(tmp_path_factory, tiny_npz, fake) -> Path:
    """A complete bank made in one uninterrupted single-process run (never modified by tests)."""
    from gensis.bank import generate_bank

    out = tmp_path_factory.mktemp("ref") / "bank"
    res = generate_bank(_bank_cfg(), str(tiny_npz), out, generator=fake, quiet=True)
    assert res.complete
    return out


@pytest.fixture
def bank_copy(reference_bank, tmp_path) -> Path:
    dst = tmp_path / "bank"
    shutil.copytree(reference_bank, dst)
    return dst


def _shard_bytes(bank: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((Path(bank) / "shards").iterdir())}
    scores = Path(bank) / "scores"  # fidelity scores: one file per shard, compared like the shards
    files.update({f"scores/{p.name}": p.read_bytes() for p in sorted(scores.iterdir())} if scores.is_dir() else {})
    return files


@pytest.fixture(scope="session")
def shard_bytes():
    """shard_bytes(bank) -> {file name: bytes} of every file in BANK/shards and BANK/scores."""
    return _shard_bytes
