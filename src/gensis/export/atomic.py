"""Write an export folder all at once: build it under a temporary sibling name, then rename it into place."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gensis.errors import UserError, writing
from gensis.rundir import is_temp_name, make_folder, remove_stale_temp_dirs, temp_path


@contextmanager
def staged_folder(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``out``; on success it becomes ``out`` (which must not exist, or
    be an empty folder; a symbolic link: its target, the link kept), on error it is removed. A kill leaves at most
    a hidden ``.gensis-tmp-OUT.<pid>@<host tag>-<hex>.tmp`` folder (marked as gensis's, like every temporary name of
    ``gensis.rundir``), which the next staged folder in the same parent removes once that pid is gone on this host
    (``gensis.rundir.remove_stale_temp_dirs``); an older version's, without a pid, after a day
    (``remove_old_staging_dirs``)."""
    given = out = Path(out)
    if out.is_symlink():  # a link the user made to a folder elsewhere (another disk): the export goes there, next to
        out = Path(os.path.realpath(out))  # its target (a rename stays on one filesystem), and the link is kept
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{given} already exists; choose another output folder or remove it")
    make_folder(out.parent)
    for p in [*remove_stale_temp_dirs(out.parent), *remove_old_staging_dirs(out.parent)]:  # never a finished one
        print(f"[gensis] removed {p}, the staging folder of an interrupted export", file=sys.stderr)
    tmp = temp_path(out)  # .gensis-tmp-OUT.<pid>@<host>-<8 hex>.tmp: marked as ours, with the process that writes it
    try:
        with writing():
            tmp.mkdir()  # mode 0777 & ~umask, as any tool's output folder (mkdtemp's was 0700)
    except OSError as e:
        _named_as_given(e, tmp, given)
        raise
    try:
        yield tmp
        try:
            with writing():
                if out.exists():
                    out.rmdir()
                os.replace(tmp, out)
        except OSError as e:  # another export to ``out`` (or the user) filled it meanwhile: theirs is kept
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise UserError(f"{given} was filled while this export ran (another export to it?); choose another "
                            f"output folder or remove it") from None
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            _named_as_given(e, tmp, given)
        raise


def _named_as_given(e: OSError, tmp: Path, given: Path) -> None:
    """An error on the staging folder ``tmp`` or a file in it names the path the user gave (``given``), not our
    temporary name (a read-only or full disk read 'cannot write .gensis-tmp-OUT.123@host-ab12cd34.tmp')."""
    if e.filename is None:
        return
    try:
        rel = Path(os.fsdecode(e.filename)).relative_to(tmp)
    except ValueError:
        return
    e.filename = str(given / rel) if rel.parts else str(given)


# Staging folders of older versions carry no pid: ``tempfile.mkdtemp(prefix=".gensis-tmp-OUT.", suffix=".tmp")``
# (marked) and, before the marker, ``mkdtemp(prefix=".OUT.", suffix=".tmp")``: a random part of 8 characters of
# mkdtemp's alphabet. Whether their process is gone cannot be checked, so one is removed only when all of these hold:
#   1. its name has one of those two shapes, and it is a real folder (not a link);
#   2. it holds only what an export writes (``_export_files``): regular files named *.json / *.safetensors (or
#      gensis's temporary names of them), at its top or in sub-folders one level down (a diffusers pipeline's
#      components, the encoder/), no link, nothing else; the unmarked shape, which a user's ".backup.20240101.tmp"
#      also has, must moreover hold a file only a gensis export writes (``_GENSIS_FILES``);
#   3. nothing in it changed for ``OLD_STAGING_AGE_S`` (a day): an export takes minutes, so an older version's
#      export still running beside this one (whose folder changes as it writes) is never hit.
# Anything else is kept: gensis deletes only what it provably wrote.
OLD_STAGING_AGE_S = 24 * 3600
_OLD_STAGING_RE = re.compile(r"^\.(?P<marker>gensis-tmp-)?.+\.[a-z0-9_]{8}\.tmp$")
# (file, key path, accepted values) that only a gensis export writes: timm folder's tag, the diffusers pipeline's
# and conditioner's class names
_GENSIS_FILES = ((("config.json", "encoder/config.json"), ("pretrained_cfg", "tag"), None),
                 (("model_index.json",), ("_class_name",), "EmbeddingConditionedPipeline"),
                 (("conditioner/config.json",), ("_class_name",), "EmbeddingConditioner"))


def _export_file(p: Path) -> bool:
    return (not p.is_symlink() and p.is_file()
            and (p.name.endswith((".json", ".safetensors")) or is_temp_name(p.name)))


def _export_files(folder: Path) -> list[Path] | None:
    """The files of a staging folder (folder and sub-folders included), None if it holds anything an export does
    not write (rule 2 above)."""
    files: list[Path] = [folder]
    for p in folder.iterdir():
        if not p.is_symlink() and p.is_dir():
            files.append(p)
            for q in p.iterdir():
                if not _export_file(q):
                    return None
                files.append(q)
        elif _export_file(p):
            files.append(p)
        else:
            return None
    return files


def _json_value(path: Path, keys: tuple[str, ...]) -> object:
    try:
        if path.stat().st_size > 1 << 20:
            return None
        value: object = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for k in keys:
        value = value.get(k) if isinstance(value, dict) else None
    return value


def _written_by_gensis(folder: Path) -> bool:
    for names, keys, expected in _GENSIS_FILES:
        for name in names:
            v = _json_value(folder / name, keys)
            if (v == expected) if expected is not None else (isinstance(v, str) and v.startswith("gensis-")):
                return True
    return False


def remove_old_staging_dirs(folder: str | os.PathLike[str], now: float | None = None) -> list[Path]:
    """Delete older versions' staging folders (no pid in their name) in ``folder`` under the rule above."""
    folder, now = Path(folder), time.time() if now is None else now
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _OLD_STAGING_RE.match(p.name)
        if m is None or p.is_symlink() or not p.is_dir():
            continue
        files = _export_files(p)
        if files is None or (m["marker"] is None and not _written_by_gensis(p)):
            continue
        if now - max(q.lstat().st_mtime for q in files) < OLD_STAGING_AGE_S:
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
    return removed
