"""The demo's evaluation of the columns finished early, run in its side lane (``gensis.pipeline.lanes``):
``gensis.pipeline.results.evaluate(..., only=COLUMNS)``, cached in ``OUT/results.json``, where the demo's final
evaluation finds those rows (same identities) and computes only the rest.

    python -m gensis.pipeline.early_eval OUT DATA PRESET METHODS COLUMNS [--no-linear]
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """``python -m gensis.pipeline.early_eval OUT DATA PRESET METHODS ONLY [--no-linear]``."""
    import argparse

    from gensis.errors import UserError
    from gensis.pipeline.results import evaluate

    p = argparse.ArgumentParser(prog="python -m gensis.pipeline.early_eval")
    p.add_argument("out")
    p.add_argument("data")
    p.add_argument("preset")
    p.add_argument("methods")
    p.add_argument("only")
    p.add_argument("--no-linear", action="store_true")
    a = p.parse_args(argv)
    try:
        evaluate(Path(a.out), a.data, a.preset, not a.no_linear, tuple(a.methods.split(",")),
                 set(a.only.split(",")))
    except UserError as e:
        print(f"gensis: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
