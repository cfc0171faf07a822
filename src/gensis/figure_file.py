"""A PNG figure written to a file the user names (``gensis eval umap --out FILE.png``, ``gensis bank show --out
FILE.png``): marked as the command's own by the PNG's ``Software`` text chunk, so that a rerun replaces a figure
that command wrote and any other existing file (a figure of the user's, a bank's header ...) is refused before
any work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gensis.errors import UserError

KEY = "Software"  # the PNG text chunk naming the writer (matplotlib's savefig metadata key, PIL's ``im.info``)


def check_figure_out(out: str | Path, software: str, what: str, option: str = "--out") -> None:
    """``option`` ``out``: a ``.png`` path that is new, or a PNG whose ``Software`` chunk is ``software`` (``what``:
    "a map", "a grid": what that command writes); a folder, another file, a path under a file: a UserError."""
    from PIL import Image

    from gensis.eval.options import check_output_folder

    if Path(out).suffix.lower() != ".png":
        raise UserError(f"{option} must be a .png file, got {out}")
    p = Path(out).expanduser()
    if p.is_dir():
        raise UserError(f"{option} {out} is a folder: name a .png file (e.g. {Path(out) / 'figure.png'})")
    check_output_folder(p.absolute().parent, option, out)
    if not p.exists():
        return
    try:
        with Image.open(p) as im:
            ours = im.format == "PNG" and im.info.get(KEY) == software
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise UserError(f"{option} {out} exists and is not {what} `{software}` wrote (a figure of yours would be "
                        f"overwritten): name another file, or remove it")


def pnginfo(software: str) -> Any:
    """PIL's ``pnginfo=`` for ``Image.save``: the ``Software`` chunk that marks the figure as ``software``'s."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(KEY, software)
    return info
