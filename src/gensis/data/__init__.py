"""Datasets: ``open_data`` / ``ImageSet`` (``sources.py``) and torch Datasets over them (``torch_datasets.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gensis.data.sources import DEFAULT_DATA, ImageSet, open_data

if TYPE_CHECKING:
    from gensis.data.torch_datasets import BankDataset, ImageDataset


def __getattr__(name: str) -> Any:  # torch is imported only when a torch Dataset is asked for
    if name in ("BankDataset", "ImageDataset"):
        from gensis.data import torch_datasets

        return getattr(torch_datasets, name)
    raise AttributeError(f"module 'gensis.data' has no attribute '{name}'")


__all__ = ["DEFAULT_DATA", "BankDataset", "ImageDataset", "ImageSet", "open_data"]
