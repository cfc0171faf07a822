"""Write an export folder all at once: build it under a temporary sibling name, then rename it into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gensis.errors import UserError
from gensis.rundir import TMP_PREFIX, TMP_SUFFIX


@contextmanager
def staged_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``out``; on success it becomes ``out`` (which must not exist, or
    be an empty folder), on error it is removed. A kill leaves at most a hidden ``.gensis-tmp-OUT.*.tmp`` folder
    (marked as gensis's, like every temporary name of ``gensis.rundir``)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists; choose another output folder or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{out.name}.", suffix=TMP_SUFFIX, dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
