"""matplotlib, an optional dependency (the ``report`` extra), for the figures of the report, ``gensis eval umap``
and ``gensis mil predict``'s heatmaps: imported where needed, or one ``UserError`` line saying what needs it and
what to install. Called before the work whose figure needs it, so a core install (``pip install .``) is not told
after the whole evaluation, with a traceback."""

from __future__ import annotations

from typing import Any

from gensis.errors import UserError


def matplotlib_module(needed_by: str) -> Any:
    """The ``matplotlib`` module on the Agg backend (files, no display); ``needed_by`` names what needs it."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(f"{needed_by} needs matplotlib: pip install 'gensis[report]'") from None
    matplotlib.use("Agg")
    return matplotlib


def pyplot(needed_by: str) -> Any:
    """``matplotlib.pyplot`` (see ``matplotlib_module``)."""
    matplotlib_module(needed_by)
    import matplotlib.pyplot as plt

    return plt
