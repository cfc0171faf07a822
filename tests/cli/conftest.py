"""Fixtures shared by the CLI tests."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """64 random 28×28 grey images in 4 classes, as an .npz: data for a demo's stages at smoke size."""
    g = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=(g.random((64, 28, 28)) * 255).astype(np.uint8), labels=np.arange(64) % 4)
    return str(path)
