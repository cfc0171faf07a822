"""One table model, three renderings (terminal text, Markdown, HTML): every results table is built once as a
``Table`` and printed, written to ``report.md`` / ``seeds.md`` and embedded in ``report.html`` from it."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

GAP = 3  # spaces before each column


@dataclass
class Table:
    """``rows[i]`` is ``(row label, cells)``; every cell is already formatted text (``–`` when missing)."""

    columns: list[str]
    rows: list[tuple[str, list[str]]] = field(default_factory=list)
    title: str = ""
    corner: str = ""

    def add(self, label: str, cells: list[str]) -> None:
        self.rows.append((label, list(cells)))

    def text(self) -> str:
        """Fixed-width terminal table, cells right-aligned under their header; each column as wide as its
        header or widest cell (one width for all made the demo's five columns 129 characters wide)."""
        first = max([14, len(self.corner) + 1] + [len(l) + 1 for l, _ in self.rows])
        widths = [max([len(c)] + [len(cells[i]) for _, cells in self.rows if i < len(cells)])
                  for i, c in enumerate(self.columns)]
        lines = [self.title] if self.title else []
        lines.append(f"{self.corner:<{first}}" + "".join(f"{c:>{w + GAP}}" for c, w in zip(self.columns, widths)))
        for label, cells in self.rows:
            lines.append(f"{label:<{first}}" + "".join(f"{x:>{w + GAP}}" for x, w in zip(cells, widths)))
        return "\n".join(lines)

    def markdown(self) -> str:
        head = f"| {self.corner} | " + " | ".join(self.columns) + " |\n|---|" + "---:|" * len(self.columns) + "\n"
        return head + "".join(f"| {label} | " + " | ".join(cells) + " |\n" for label, cells in self.rows)

    def html(self) -> str:
        e = html.escape
        out = ["<table>", "<tr><th>" + e(self.corner) + "</th>" + "".join(f"<th>{e(c)}</th>" for c in self.columns)
               + "</tr>"]
        for label, cells in self.rows:
            out.append(f"<tr><td>{e(label)}</td>" + "".join(f"<td>{e(x)}</td>" for x in cells) + "</tr>")
        return "\n".join(out + ["</table>"])
