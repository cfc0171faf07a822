"""Which slides train and which test: k-fold cross-validation by slide or patient, or seeds on a given split.

k-fold uses scikit-learn's ``StratifiedGroupKFold``: the groups are patients when the labels CSV has a
``patient`` column (all slides of a patient fall in one fold), else slides; folds are balanced by label as far
as the groups allow (``GroupKFold``, unstratified, when a class has fewer than k slides). With a ``split`` column (train / test, or val standing in for test, as the paper does on
BRIGHT) the same split is trained with several seeds instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gensis.errors import UserError


@dataclass
class Split:
    name: str              # fold-0 ... or seed-0 ...
    seed: int
    train: np.ndarray      # indices into the slide list
    test: np.ndarray


def kfold(labels: np.ndarray, groups: np.ndarray, k: int, seed: int,
          names: list[str] | None = None) -> list[Split]:
    """k folds over slides; ``groups`` (patient or slide of each slide) never straddle two folds. ``names``: the
    class names of the label indices, for the warning about a class too small to stratify."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if k < 2:
        raise UserError(f"cv.folds must be >= 2, got {k}")
    if n_groups < k:
        raise UserError(f"cv.folds={k}: {k}-fold cross-validation needs at least {k} slides/patients, found "
                        f"{n_groups}" + (f"; set cv.folds={n_groups} or fewer" if n_groups >= 2 else ""))
    import warnings

    with warnings.catch_warnings():  # "least populated class has only N members": fine for small cohorts
        warnings.simplefilter("ignore", UserWarning)
        values, counts = np.unique(labels, return_counts=True)
        if counts.min() >= k:
            skf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            folds = list(skf.split(np.zeros(len(labels)), labels, groups))
        else:  # a class smaller than k cannot be stratified: plain group folds (sklearn refuses otherwise)
            import sys

            from sklearn.model_selection import GroupKFold

            small = int(values[counts.argmin()])
            name = names[small] if names is not None else str(small)
            print(f"gensis: warning: class '{name}' has {counts.min()} slide(s), fewer than the {k} folds; folds are "
                  f"grouped but not stratified, and some folds test no slide of it",
                  file=sys.stderr)
            gkf = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
            folds = list(gkf.split(np.zeros(len(labels)), labels, groups))
    return [Split(f"fold-{i}", seed + i, np.sort(tr), np.sort(te)) for i, (tr, te) in enumerate(folds)]


def seeded(split_col: list[str], n_seeds: int, seed: int) -> list[Split]:
    """The given split (``train`` rows train; ``test`` rows, else ``val`` rows, test) with ``n_seeds`` seeds."""
    col = np.array([s.strip().lower() for s in split_col])
    train = np.flatnonzero(col == "train")
    test_name = "test" if (col == "test").any() else "val"
    test = np.flatnonzero(col == test_name)
    if len(train) == 0 or len(test) == 0:
        raise UserError("the labels CSV's 'split' column needs 'train' rows and 'test' (or 'val') rows")
    return [Split(f"seed-{seed + i}", seed + i, train, test) for i in range(n_seeds)]
