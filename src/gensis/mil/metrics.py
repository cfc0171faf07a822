"""Slide-level classification metrics, written out in numpy (tested equal to scikit-learn's).

    accuracy           mean(ŷ = y)
    balanced accuracy  mean over classes present in y of recall_c = TP_c / (TP_c + FN_c)
    macro F1           mean over classes in y ∪ ŷ of F1_c = 2TP_c / (2TP_c + FP_c + FN_c) (0 when undefined)
    macro OvR AUC      mean over classes c of AUC(1[y = c], p_c), the Mann–Whitney statistic with ties
                       counted ½; classes absent from y (or equal to all of y) are skipped, NaN if none is left
    Cohen's κ          1 − Σ w_ij O_ij / Σ w_ij E_ij, O the confusion matrix over classes 0..C−1, E the outer
                       product of its marginals / n, w_ij = (i−j)² (quadratic, ISUP grading), |i−j| (linear) or
                       1[i≠j] (unweighted). Weights use the class numbers, so a grade missing from a fold keeps
                       the distances between the others (scikit-learn numbers the classes it sees; the same
                       whenever every class occurs).
"""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) counts: rows true class, columns predicted class."""
    return np.bincount(np.asarray(y_true) * n_classes + np.asarray(y_pred), minlength=n_classes**2).reshape(
        n_classes, n_classes)


def accuracy(y_true, y_pred) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def balanced_accuracy(y_true, y_pred, n_classes: int) -> float:
    cm = confusion(y_true, y_pred, n_classes)
    support = cm.sum(1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def macro_f1(y_true, y_pred, n_classes: int) -> float:
    cm = confusion(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(float)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    seen = (cm.sum(0) + cm.sum(1)) > 0
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[seen].mean())


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    _, start, counts = np.unique(xs, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0                      # average 1-based rank of each tie block
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, counts)
    return ranks


def binary_auc(pos: np.ndarray, score: np.ndarray) -> float:
    pos = np.asarray(pos, bool)
    n1, n0 = pos.sum(), (~pos).sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = _average_ranks(np.asarray(score, np.float64))
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def auc_ovr_per_class(y_true, y_prob: np.ndarray) -> np.ndarray:
    y_true = np.asarray(y_true)
    return np.array([binary_auc(y_true == c, y_prob[:, c]) for c in range(y_prob.shape[1])])


def macro_auc_ovr(y_true, y_prob: np.ndarray) -> float:
    per = auc_ovr_per_class(y_true, y_prob)
    per = per[~np.isnan(per)]
    return float(per.mean()) if len(per) else float("nan")


def cohen_kappa(y_true, y_pred, n_classes: int, weights: str | None = "quadratic") -> float:
    cm = confusion(y_true, y_pred, n_classes).astype(np.float64)
    n = cm.sum()
    expected = np.outer(cm.sum(1), cm.sum(0)) / n
    i, j = np.indices((n_classes, n_classes))
    w = {"quadratic": (i - j) ** 2, "linear": np.abs(i - j), None: (i != j)}[weights].astype(np.float64)
    denom = (w * expected).sum()
    return float(1 - (w * cm).sum() / denom) if denom > 0 else float("nan")


METRICS = {  # name → f(y_true, y_pred, y_prob, n_classes); the order of the tables
    "accuracy": lambda t, p, pr, c: accuracy(t, p),
    "balanced_accuracy": lambda t, p, pr, c: balanced_accuracy(t, p, c),
    "macro_f1": lambda t, p, pr, c: macro_f1(t, p, c),
    "macro_auc_ovr": lambda t, p, pr, c: macro_auc_ovr(t, pr),
    "quadratic_kappa": lambda t, p, pr, c: cohen_kappa(t, p, c, "quadratic"),
}


def all_metrics(y_true, y_prob: np.ndarray) -> dict[str, float]:
    """Every metric of ``METRICS`` from true classes (N,) and class probabilities (N, C); ŷ = argmax."""
    y_true = np.asarray(y_true, np.int64)
    y_prob = np.asarray(y_prob, np.float64)
    y_pred = y_prob.argmax(1)
    c = y_prob.shape[1]
    return {k: f(y_true, y_pred, y_prob, c) for k, f in METRICS.items()}
