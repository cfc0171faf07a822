"""Write an export folder all at once: build it under a temporary sibling name, then rename it into place."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gensis.errors import UserError
from gensis.rundir import remove_stale_temp_dirs, temp_path


@contextmanager
def staged_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``out``; on success it becomes ``out`` (which must not exist, or
    be an empty folder), on error it is removed. A kill leaves at most a hidden ``.gensis-tmp-OUT.<pid>-<hex>.tmp``
    folder (marked as gensis's, like every temporary name of ``gensis.rundir``), which the next staged folder in
    the same parent removes once that pid is gone (``gensis.rundir.remove_stale_temp_dirs``)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists; choose another output folder or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    for p in remove_stale_temp_dirs(out.parent):  # left by a killed export: never a finished one
        print(f"[gensis] removed {p}, the staging folder of an interrupted export", file=sys.stderr)
    tmp = temp_path(out)  # .gensis-tmp-OUT.<pid>-<8 hex>.tmp: marked as ours, with the pid that writes it
    tmp.mkdir()  # mode 0777 & ~umask, as any tool's output folder (mkdtemp's was 0700)
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
