"""Progress bars (tqdm) that show rate and ETA on a terminal and stay quiet in logs/CI."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator

from tqdm.auto import tqdm

NO_PROGRESS = "GENSIS_NO_PROGRESS"  # set (to anything): no bar at all


def progress(iterable=None, total: int | None = None, desc: str = "", disable: bool = False, **kw) -> tqdm:
    if os.environ.get(NO_PROGRESS):
        disable = True
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, file=sys.stderr,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, **kw)


@contextmanager
def bars_off(off: bool = True) -> Iterator[None]:
    """Within it, when ``off``: no progress bar at all, a stage's own and those of the passes it runs (features,
    latents, the E-LDM's embedding cache); what was set before is restored after. ``--quiet`` and the Python
    API's ``quiet=True``."""
    before = os.environ.get(NO_PROGRESS)
    if off:
        os.environ[NO_PROGRESS] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(NO_PROGRESS, None)
        else:
            os.environ[NO_PROGRESS] = before
