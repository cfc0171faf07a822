"""docs/eldm.md lists every file `gensis eldm sample` writes (figures.json was missing: a user who kept only the
PNGs, or wondered what the JSON was, had nothing to read)."""

from pathlib import Path

from gensis.folder_kind import FIGURES_FORMAT, FIGURES_MARKER, FIGURES_PNGS

DOC = Path(__file__).resolve().parents[2] / "docs" / "eldm.md"


def test_every_sample_output_is_in_docs_eldm():
    text = DOC.read_text()
    para = next(p for p in text.split("\n\n") if p.startswith("`sample` writes into"))
    for name in (FIGURES_MARKER, *FIGURES_PNGS, FIGURES_FORMAT):
        assert f"`{name}`" in para or f'"{name}"' in para, name
