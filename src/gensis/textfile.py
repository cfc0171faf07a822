"""A user's small text files (CSV tables, list files) read as UTF-8, each mistake one ``UserError`` line.

Excel's "CSV UTF-8" starts with a byte-order mark, which is dropped (else the first column is named
``\\ufeffslide``); a file that is not UTF-8 text (a spreadsheet saved as .xlsx, Latin-1) names itself instead of
raising ``UnicodeDecodeError``. CSV values come stripped, a missing cell (a short row) as ``""``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from gensis.errors import UserError


def read_text(path: str | Path) -> str:
    """The file's text (UTF-8, a BOM dropped); a ``UserError`` naming it when it is not UTF-8 text."""
    path = Path(path)
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file (save it as CSV UTF-8 / plain text)") from None


def read_csv(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line number, row)]) of a CSV file with a header line; names and values stripped."""
    text = read_text(path)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [str(h).strip() for h in (reader.fieldnames or [])]
        rows = []
        for r in reader:
            row = {str(k).strip(): (v if isinstance(v, str) else "").strip() for k, v in r.items() if k is not None}
            rows.append((reader.line_num, row))
    except csv.Error as e:
        raise UserError(f"{path}: not a readable CSV ({e})") from None
    return header, rows


def csv_text(rows: list[list]) -> str:
    """CSV text of ``rows`` (the first one the header), quoted where a cell needs it: a slide named ``A,1`` or
    ``"B"`` stays one cell (joining with commas split it into two columns)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
