"""Reference vectors computed from the original research code (see tests/reference/README.md).

``load_reference()`` returns the parsed ``reference-vectors.json``: the copy in ``tests/reference/`` or,
when the environment variable ``GENSIS_REFERENCE_VECTORS`` names a file, that file (same schema, other
seeds), so that the same tests can run on vectors made the same way from other seeds.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

ENV_VAR = "GENSIS_REFERENCE_VECTORS"
DEFAULT_PATH = Path(__file__).parent / "reference" / "reference-vectors.json"


def reference_path() -> Path:
    """The file the tests read: ``$GENSIS_REFERENCE_VECTORS`` if set, else the copy in the repository."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def load_reference() -> dict[str, Any]:
    """Parsed reference vectors (cached per path; do not mutate the result)."""
    return _load(str(reference_path()))
