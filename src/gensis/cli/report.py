"""``gensis report RUN``: Markdown + self-contained HTML report of a `gensis demo` folder."""

from __future__ import annotations

import argparse

from gensis.cli.main import DefaultsHelp, add_common, examples


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write report.md and report.html for a demo folder",
                       description="Results table, training curves, real-vs-generated grid, interpolation strip and "
                                   "a UMAP of real + interpolated embeddings (paper Fig. 6) for DINO and Gen-DINO.",
                       formatter_class=DefaultsHelp,
                       epilog=examples("gensis report gensis-demo",
                                       "gensis report gensis-demo --data cifar.npz@val   # another embedding figure"))
    p.add_argument("run", help="folder made by `gensis demo` (holding dino/, eldm/, gendino/ ...)")
    p.add_argument("--data", default=None, help="dataset for the embedding figure (default: the one DINO used)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from gensis.report import write_report

    md, html = write_report(args.run, args.data)
    print(f"report: {md} and {html}")
    return 0
