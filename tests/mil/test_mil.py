"""ABMIL against the original AttentionDeepMIL code, metrics against scikit-learn, folds, training end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reference_vectors import load_reference  # noqa: E402

from gensis.mil.abmil import AttentionPool  # noqa: E402
from gensis.mil.cv import kfold, seeded  # noqa: E402
from gensis.mil.metrics import (auc_ovr_per_class, balanced_accuracy, cohen_kappa, confusion,  # noqa: E402
                                macro_auc_ovr, macro_f1)


def _linear(w: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(np.array(w["weight"], np.float32)), torch.tensor(np.array(w["bias"], np.float32))


@pytest.mark.parametrize("name", ["Attention", "GatedAttention"])
def test_attention_pooling_equals_attentiondeepmil(name):
    ref = load_reference()["abmil"]
    m = ref["models"][name]
    gated = name == "GatedAttention"
    pool = AttentionPool(ref["M"], ref["L"], gated=gated)
    # the original's module paths → ours (the plain model's attention.0 / attention.2 are V and w)
    mapping = ({"attention_V.0": pool.attention_V[0], "attention_U.0": pool.attention_U[0],
                "attention_w": pool.attention_w} if gated else
               {"attention.0": pool.attention_V[0], "attention.2": pool.attention_w})
    with torch.no_grad():
        for path, layer in mapping.items():
            w, b = _linear(m["weights"][path])
            layer.weight.copy_(w)
            layer.bias.copy_(b)
    cw, cb = _linear(m["weights"]["classifier.0"])
    assert len(m["bags"]) == 2
    for bag in m["bags"]:
        h = torch.tensor(np.array(bag["inputs"]["bag"], np.float32))[0]        # (K, 16)
        z, a = pool(h)
        np.testing.assert_allclose(a.detach().numpy(), np.array(bag["outputs"]["A"])[0], rtol=1e-5, atol=1e-7)
        y_prob = torch.sigmoid(z @ cw.T + cb)                                  # the original's classifier
        np.testing.assert_allclose(y_prob.detach().numpy(), np.array(bag["outputs"]["Y_prob"])[0], rtol=1e-5)
        assert float(a.detach().sum()) == pytest.approx(1.0, abs=1e-6)


def test_metrics_equal_sklearn_reference():
    ref = load_reference()["sklearn_metrics"]
    c = ref["n_classes"]
    for ex in ref["examples"]:
        y, prob, pred = (np.array(ex["inputs"][k]) for k in ("y_true", "y_prob", "y_pred"))
        o = ex["outputs"]
        np.testing.assert_array_equal(confusion(y, pred, c), np.array(o["confusion_matrix"]))
        assert cohen_kappa(y, pred, c, "quadratic") == pytest.approx(o["cohen_kappa_quadratic"], abs=1e-10)
        assert cohen_kappa(y, pred, c, "linear") == pytest.approx(o["cohen_kappa_linear"], abs=1e-10)
        assert cohen_kappa(y, pred, c, None) == pytest.approx(o["cohen_kappa_unweighted"], abs=1e-10)
        assert balanced_accuracy(y, pred, c) == pytest.approx(o["balanced_accuracy"], abs=1e-10)
        assert macro_auc_ovr(y, prob) == pytest.approx(o["roc_auc_ovr_macro"], abs=1e-10)
        np.testing.assert_allclose(auc_ovr_per_class(y, prob), o["roc_auc_ovr_per_class"], atol=1e-10)


def test_macro_f1_and_ties_equal_sklearn():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 50)
    pred = np.where(rng.random(50) < 0.6, y, rng.integers(0, 4, 50))
    assert macro_f1(y, pred, 4) == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-12)
    score = rng.integers(0, 5, 50) / 4.0   # many ties
    pos = y == 1
    from gensis.mil.metrics import binary_auc

    assert binary_auc(pos, score) == pytest.approx(roc_auc_score(pos, score), abs=1e-12)


def test_kfold_never_splits_a_slide_or_patient():
    rng = np.random.default_rng(1)
    n = 60
    patients = rng.integers(0, 23, n)          # several slides per patient
    labels = rng.integers(0, 3, n)
    folds = kfold(labels, patients, 5, seed=0)
    seen = np.concatenate([f.test for f in folds])
    assert sorted(seen.tolist()) == list(range(n))                 # every slide tested exactly once
    for f in folds:
        assert not set(patients[f.train]) & set(patients[f.test])   # no patient on both sides
        assert not set(f.train) & set(f.test)
    owner = {}
    for i, f in enumerate(folds):
        for p in set(patients[f.test]):
            assert owner.setdefault(p, i) == i                       # a patient lives in one fold
    # a class with fewer members than folds: grouped, unstratified folds instead of sklearn's error
    small = kfold(np.array([0, 0, 0, 0, 1, 1]), np.arange(6), 5, seed=0)
    assert sorted(np.concatenate([f.test for f in small]).tolist()) == list(range(6))
    sp = seeded(["train", "test", "train", "val", "test"], 3, 5)
    assert [s.seed for s in sp] == [5, 6, 7] and sp[0].test.tolist() == [1, 4] and sp[0].train.tolist() == [0, 2]
