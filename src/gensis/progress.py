"""Progress bars (tqdm) that show rate and ETA on a terminal and stay quiet in logs/CI."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress(iterable=None, total: int | None = None, desc: str = "", disable: bool = False, **kw) -> tqdm:
    if os.environ.get("GENSIS_NO_PROGRESS"):
        disable = True
    return tqdm(iterable, total=total, desc=desc, disable=disable, dynamic_ncols=True, file=sys.stderr,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, **kw)
