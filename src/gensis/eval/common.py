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
    return {"name": ds.name, "identity": ds.identity, "size": len(ds), "num_classes": ds.num_classes,
            "split": getattr(ds, "split", None), "source_size": getattr(ds, "source_size", None)}


def describe_encoder(encoder) -> dict:
    """Name, identity (weights hash or baseline name), feature dimension and input size of an encoder."""
    return {"name": encoder.name, "identity": encoder.identity, "dim": encoder.dim,
            "image_size": encoder.image_size}


def open_train_test(train: str, test: str | None, val_fraction: float = 0.2, split_seed: int = 0):
    """(train_ds, test_ds) for ``--train``/``--test``, the test labels matched to train's classes by name.

    One source (``--test`` absent or naming the same data): its train and val splits, unless a split is
    named (``DATA@train``, ``@val``, ``@all``). Two different sources: each is used whole unless a split
    is named.
    """
    from gensis.data.sources import DataSpec, match_classes, open_data

    same = test is None or DataSpec.parse(test).source == DataSpec.parse(train).source
    train_ds = open_data(train, "train" if same else "all", val_fraction, split_seed)
    test_ds = open_data(test or train, "val" if same else "all", val_fraction, split_seed)
    return train_ds, match_classes(train_ds, test_ds)


def split_note(train: dict, test: dict) -> str | None:
    """One line saying how many images were scored when a split was taken (None when both are whole).

    ``train``/``test`` are ``describe_data`` dicts (as in result files)."""
    parts = []
    for role, d in (("scored", test), ("trained on", train)):
        if d.get("split") and d.get("source_size"):
            parts.append(f"{role} {d['size']:,} of the {d['source_size']:,} images of "
                         f"{d['name'].rsplit('@', 1)[0]} (its {d['split']} split)")
    if not parts:
        return None
    return "; ".join(parts) + "; name a split (DATA@all) to change it"
