"""A user's input path of the kind a command reads (a CSV or YAML file, a folder of bags or tiles ...): one
``UserError`` line when it is missing, and another when it exists as the other kind (a folder given where a file
goes said "not found", though it is there)."""

from __future__ import annotations

import os
from pathlib import Path

from gensis.errors import UserError


def input_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` (``~`` expanded) when it is a file; else "WHAT not found: PATH", or "WHAT PATH is a folder, not a
    file" (``what``: e.g. "labels CSV")."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{what} {p} is a folder, not a file: name the file")
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    return p


def input_folder(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` (``~`` expanded) when it is a folder; else "WHAT not found: PATH", or "WHAT PATH is a file, not a
    folder" (``what``: e.g. "features folder")."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{what} {p} is a file, not a folder: name the folder")
    if not p.is_dir():
        raise UserError(f"{what} not found: {p}")
    return p
