"""Pieces shared by the evaluations: labels, and the identities written into result files."""

from __future__ import annotations

import numpy as np

from gensis.errors import UserError


def labels_of(ds, role: str) -> np.ndarray:
    """The integer labels of a dataset; a UserError when it has none (evaluations need labels)."""
    if len(ds) == 0:
        raise UserError(f"{role} dataset '{ds.name}' is empty")
    if ds.labels is None:
        raise UserError(f"{role} dataset '{ds.name}' has no labels; evaluation needs labelled images")
    return np.asarray(ds.labels, dtype=np.int64)


def num_classes_of(train_ds, test_ds, y_train: np.ndarray, y_test: np.ndarray) -> int:
    return max(train_ds.num_classes, test_ds.num_classes, int(max(y_train.max(), y_test.max())) + 1)


def describe_data(ds) -> dict:
    """Name, identity (content hash), size and class count of a dataset, for result files."""
    return {"name": ds.name, "identity": ds.identity, "size": len(ds), "num_classes": ds.num_classes}


def describe_encoder(encoder) -> dict:
    """Name, identity (weights hash or baseline name), feature dimension and input size of an encoder."""
    return {"name": encoder.name, "identity": encoder.identity, "dim": encoder.dim,
            "image_size": encoder.image_size}
