"""Shared pieces of the bank tests: a tiny dataset with groups, the fake generator, a reference bank (built by
``tests/bank_builders.py``, which the tests that train on a bank use too)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from bank_builders import BASE_OVERRIDES, bank_cfg as _bank_cfg, build_bank, fake_generator, make_npz

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def base_overrides() -> list[str]:
    return list(BASE_OVERRIDES)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny ops: OpenMP spinning on a shared 2-core box costs more than it saves


@pytest.fixture(scope="session")
def bank_cfg():
    """bank_cfg("gen.seed=3", ...) -> the tests' config dict."""
    return _bank_cfg


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    return make_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


@pytest.fixture(scope="session", name="make_npz")
def make_npz_fixture():
    """make_npz(path, n=100, size=8, seed=0) -> path of an .npz with images, labels and groups."""
    return make_npz


@pytest.fixture(scope="session")
def fake():
    return fake_generator()


@pytest.fixture(scope="session")
def reference_bank(tmp_path_factory, tiny_npz, fake) -> Path:
    """A complete bank made in one uninterrupted single-process run (never modified by tests)."""
    return build_bank(tiny_npz, tmp_path_factory.mktemp("ref") / "bank", generator=fake)


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
