"""Attributes of gensis's HDF5 files (slide bags, tile files): plain Python values in, plain Python values out.

h5py stores a ``Path`` only as its string, and gives strings back as ``str`` or ``bytes`` and numbers as numpy
scalars; ``write_attrs`` stores ``Path`` values as strings, ``read_attrs`` / ``attr_value`` return ``str``,
``int``, ``float`` and ``bool`` again (arrays as they come). A file name that is not UTF-8 (Python's str with
surrogate escapes, e.g. a Latin-1 ``café.svs``) is stored as its bytes and read back as the same str.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np


def write_attrs(attrs: Mapping[str, Any], *targets: Any) -> None:
    """Set every attribute of ``attrs`` on each of ``targets`` (an h5py file, group or dataset), a ``Path`` as its
    string."""
    for k, v in attrs.items():
        v = str(v) if isinstance(v, Path) else v
        if isinstance(v, str) and not v.isascii():
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:  # a file name that is not UTF-8 (Latin-1 from an old share): its bytes
                v = np.bytes_(v.encode("utf-8", "surrogateescape"))
        for t in targets:
            t.attrs[k] = v


def attr_value(v: Any) -> Any:
    """An attribute as h5py read it -> a plain value: ``bytes`` decoded, numpy scalars as Python scalars."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")  # a non-UTF-8 file name comes back as the str os gave
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_attrs(obj: Any) -> dict[str, Any]:
    """All attributes of an h5py file, group or dataset as plain values (``attr_value``)."""
    return {k: attr_value(v) for k, v in obj.attrs.items()}


def read_file_attrs(path: Path) -> dict[str, Any] | None:
    """The attributes of an HDF5 file (``read_attrs``), or None when it is absent or unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return read_attrs(f)
    except OSError:
        return None
