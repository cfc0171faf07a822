"""Registry of self-supervised methods: ``gensis pretrain --method NAME``.

A method is one module with a ``Method`` subclass (see ``base.py`` for the contract); adding one is one line
here (name -> "module:Class", imported only when used, so this module stays free of torch for the CLI).
"""

from __future__ import annotations

import difflib
import importlib

from gensis.errors import UserError
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gensis.ssl.methods.base import Method

METHODS: dict[str, str] = {
    "dino": "gensis.ssl.methods.dino:DINO",
    "ibot": "gensis.ssl.methods.ibot:IBOT",
    "dinov2": "gensis.ssl.methods.dinov2:DINOv2",
    "simclr": "gensis.ssl.methods.simclr:SimCLR",
}


def method_class(name: str) -> "type[Method]":
    """The ``Method`` subclass registered as ``name``; an unknown name lists the valid ones."""
    if name not in METHODS:
        close = difflib.get_close_matches(str(name), METHODS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown method '{name}' (valid: {', '.join(METHODS)}){hint}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_method(cfg: dict) -> "Method":
    """The method named by ``cfg['method']``, built from the resolved pretraining config."""
    return method_class(cfg["method"])(cfg)


__all__ = ["METHODS", "build_method", "method_class"]
