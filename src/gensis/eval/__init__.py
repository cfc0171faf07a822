"""Evaluations of frozen encoders (DINO protocols): weighted k-NN and linear probe.

``EVALUATIONS`` maps each evaluation's name (the ``gensis eval`` sub-command) to its function
``fn(encoder, train_ds, test_ds, ...) -> dict``.
"""

from __future__ import annotations

from gensis.eval.knn import knn_classify, knn_eval
from gensis.eval.linear import LinearConfig, linear_eval

EVALUATIONS = {"knn": knn_eval, "linear": linear_eval}


def get_evaluation(name: str):
    """The evaluation function registered as ``name``; a UserError listing the valid names otherwise."""
    from gensis.errors import UserError

    if name not in EVALUATIONS:
        raise UserError(f"unknown evaluation '{name}'; available: {', '.join(EVALUATIONS)}")
    return EVALUATIONS[name]


__all__ = ["EVALUATIONS", "LinearConfig", "get_evaluation", "knn_classify", "knn_eval", "linear_eval"]
