"""The evaluation registry: one module per protocol, each defining ``EVALUATION = Evaluation(...)``.

``gensis eval <name>`` is generated from this registry (``gensis.cli.eval``), and ``gensis eval all``
runs every registered evaluation whose data is given. To add a protocol, write ``gensis/eval/<name>.py``
with an ``EVALUATION`` and add its name to ``PROTOCOLS`` (one line).
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field
from typing import Callable

# the order is that of `gensis eval --help` and of `gensis eval all`
PROTOCOLS = ("knn", "linear", "robustness", "copydetect", "retrieval", "davis", "umap", "all")


@dataclass(frozen=True)
class Evaluation:
    """A protocol as the command line and ``eval all`` see it."""

    name: str
    summary: str  # one line for `gensis eval --help`
    description: str  # the sub-command's --help text
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict]  # parsed options → JSON-ready result
    format: Callable[[dict], str]  # result → the printed table
    headline: Callable[[dict], list[tuple[str, float]]] = lambda res: []  # (metric, value) for `eval all`
    data_options: tuple[str, ...] = field(default=())  # options that `eval all` needs set to run it


def evaluations() -> dict[str, Evaluation]:
    """Every registered evaluation, by name (imports each protocol module)."""
    out = {}
    for name in PROTOCOLS:
        module = importlib.import_module(f"gensis.eval.{name}")
        ev = module.EVALUATION
        if ev.name != name:
            raise RuntimeError(f"gensis.eval.{name} registers '{ev.name}'")
        out[name] = ev
    return out


def get_evaluation(name: str) -> Evaluation:
    """The evaluation registered as ``name``; a UserError listing the valid names otherwise."""
    from gensis.errors import UserError

    if name not in PROTOCOLS:
        raise UserError(f"unknown evaluation '{name}'; available: {', '.join(PROTOCOLS)}")
    return evaluations()[name]
