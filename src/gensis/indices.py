"""Checks of index arguments (image positions, bank slots): integers in range, nothing silently rounded.

``np.asarray([0.5], np.int64)`` is ``[0]`` and ``np.asarray([True], np.int64)`` is ``[1]``: a float or a bool
given as an index would silently address another entry. The public index-taking methods of the bank reader and
the torch datasets take Python ints or integer numpy/torch values (scalars or arrays) and refuse anything else,
and out-of-range values, with one line naming the argument and the valid range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gensis.errors import UserError


class IndexArgumentError(UserError, IndexError):
    """A bad index argument: a ``UserError`` (one line at the CLI) that is also an ``IndexError`` (what the
    sequence protocol and callers catching out-of-range lookups expect)."""


def _kind(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "a bool"
    if isinstance(v, (float, np.floating)):
        return "a float"
    return f"a {type(v).__name__}"


def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach") and hasattr(values, "numpy"):  # a torch tensor
        values = values.detach().cpu().numpy()
    if isinstance(values, (list, tuple)):  # numpy turns [True, 1] into ints: look at the elements themselves
        flat = np.asarray(values, dtype=object).ravel()
        for v in flat:
            if hasattr(v, "detach") and hasattr(v, "item"):
                v = v.item()
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                return np.asarray([v], dtype=object)  # the first bad element, reported by the caller
    return np.asarray(values)


def index_array(name: str, values: Any, stop: int, what: str = "") -> np.ndarray:
    """``values`` as a flat int64 array, each in ``[0, stop)``; else an ``IndexArgumentError`` naming ``name``
    (``what``: words on the range, e.g. ``" (image positions)"``)."""
    arr = _as_array(values)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype.kind not in "iu":
        bad = next((v for v in arr.ravel().tolist()
                    if isinstance(v, bool) or not isinstance(v, (int, np.integer))), arr.ravel()[0])
        raise IndexArgumentError(f"{name} must be integers in [0, {stop}){what}, got {bad!r} ({_kind(bad)})")
    flat = arr.astype(np.int64).ravel()
    out = (flat < 0) | (flat >= stop)
    if out.any():
        raise IndexArgumentError(f"{name} must be integers in [0, {stop}){what}, got {int(flat[out][0])}")
    return flat


def index_item(i: Any, n: int) -> int:
    """``i`` as a position in a sequence of ``n`` items (negative counts from the end, as in Python)."""
    if hasattr(i, "detach") and hasattr(i, "item") and getattr(i, "ndim", 1) == 0:  # a 0-d torch tensor
        i = i.item()
    if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
        raise IndexArgumentError(f"index must be an integer in [-{n}, {n}), got {i!r} ({_kind(i)})")
    if not -n <= int(i) < n:
        raise IndexArgumentError(f"index {int(i)} out of range for {n} images (valid: [-{n}, {n}))")
    return int(i) % n
