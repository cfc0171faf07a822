"""Read third-party pickles that should only contain numpy arrays, without running arbitrary code.

``pickle.load`` executes whatever callables a file names; a restricted unpickler (as the Python docs
recommend) admits only the handful of globals needed to rebuild ``numpy.ndarray`` objects.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol-5 pickles of arrays
    ("numpy._core.numeric", "_frombuffer"),
}


def _lookup(module: str, name: str) -> Any:
    import importlib

    # numpy 2 moved numpy.core -> numpy._core; both spellings appear in the wild.
    for mod in (module, module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
        try:
            return getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except those needed for numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _lookup(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name} (only numpy arrays are allowed)")


def load_numpy_pickle(data: bytes, encoding: str = "ASCII") -> Any:
    """Unpickle ``data`` admitting only plain containers (dict, list, tuple, str, numbers) and numpy arrays /
    dtypes / scalars. ``encoding="latin1"`` reads Python 2 pickles holding numpy arrays."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding=encoding).load()
