"""Test images of a class no training image has: their score was folded into top-1 without a word."""

from __future__ import annotations

import numpy as np
import pytest

from gensis.cli.main import main


@pytest.mark.parametrize("protocol", ["knn", "linear"])
def test_test_images_of_a_class_absent_from_training_are_counted(tmp_path, capsys, protocol):
    """Two unnamed .npz files: the test set's label 2 is no training label (a user's 3rd class, missing from the
    training file); k-NN and the probe can never predict it, so top-1 cannot exceed 70 %: one line says so."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tr.npz", images=rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), labels=np.arange(12) % 2)
    np.savez(tmp_path / "te.npz", images=rng.integers(0, 256, (10, 8, 8), dtype=np.uint8),
             labels=np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]))
    extra = ["--k", "3"] if protocol == "knn" else ["--epochs", "1"]
    assert main(["eval", protocol, "--encoder", "pixels", "--train", f"{tmp_path / 'tr.npz'}@all",
                 "--test", f"{tmp_path / 'te.npz'}@all", "--cache", "none", *extra]) == 0
    err = capsys.readouterr().err
    assert ("3 of the 10 test images (te) are of a class no training image has (2): they cannot be classified right, "
            "so top-1 is at most 70.0 %") in err
    assert main(["eval", protocol, "--encoder", "pixels", "--train", f"{tmp_path / 'tr.npz'}@all",
                 "--test", f"{tmp_path / 'tr.npz'}@all", "--cache", "none", *extra]) == 0
    assert "no training image has" not in capsys.readouterr().err
