"""Evaluations of frozen encoders: one module per protocol, registered in ``gensis.eval.registry``.

Protocols: ``knn`` and ``linear`` (DINO), ``robustness`` (linear probe on OOD sets), ``copydetect``
(Copydays), ``retrieval`` (revisited Oxford/Paris), ``davis`` (DAVIS-2017 label propagation), ``umap``
(embedding maps) and ``all``. Features come from ``gensis.eval.features``; metrics equal to the
benchmarks' code from ``gensis.eval.metrics``.
"""

from __future__ import annotations

from gensis.eval.knn import knn_classify, knn_eval
from gensis.eval.linear import LinearConfig, linear_eval
from gensis.eval.registry import PROTOCOLS, evaluations, get_evaluation

__all__ = ["PROTOCOLS", "LinearConfig", "evaluations", "get_evaluation", "knn_classify", "knn_eval", "linear_eval"]
