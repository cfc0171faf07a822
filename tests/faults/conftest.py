"""Fixtures of the fault-injection suite (tiny data); helpers are in fault_helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("GENSIS_NO_PROGRESS", "1")

@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 4
    images = rng.integers(0, 60, (64, 16, 16), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 4 * c:4 * c + 4] = 230
    p = tmp_path_factory.mktemp("faults-data") / "tiny.npz"
    np.savez(p, images=images, labels=labels)
    return p
