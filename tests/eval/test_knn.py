"""Weighted k-NN: against DINO's outputs, against DINO's function, and a case worked out by hand."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gensis.data.sources import ArrayImageSet
from gensis.errors import UserError
from gensis.eval.knn import knn_classify, knn_eval
from gensis.models.encoder import load_encoder

REFERENCE = Path(__file__).with_name("dino_knn_reference.json")


@torch.no_grad()
def dino_knn_classifier(train_features, train_labels, test_features, test_labels, k, T, num_classes=1000):
    """``knn_classifier`` from facebookresearch/dino ``eval_knn.py``, verbatim apart from this docstring."""
    top1, top5, total = 0.0, 0.0, 0
    train_features = train_features.t()
    num_test_images, num_chunks = test_labels.shape[0], 100
    imgs_per_chunk = num_test_images // num_chunks
    retrieval_one_hot = torch.zeros(k, num_classes).to(train_features.device)
    for idx in range(0, num_test_images, imgs_per_chunk):
        # get the features for test images
        features = test_features[
            idx : min((idx + imgs_per_chunk), num_test_images), :
        ]
        targets = test_labels[idx : min((idx + imgs_per_chunk), num_test_images)]
        batch_size = targets.shape[0]

        # calculate the dot product and compute top-k neighbors
        similarity = torch.mm(features, train_features)
        distances, indices = similarity.topk(k, largest=True, sorted=True)
        candidates = train_labels.view(1, -1).expand(batch_size, -1)
        retrieved_neighbors = torch.gather(candidates, 1, indices)

        retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()
        retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
        distances_transform = distances.clone().div_(T).exp_()
        probs = torch.sum(
            torch.mul(
                retrieval_one_hot.view(batch_size, -1, num_classes),
                distances_transform.view(batch_size, -1, 1),
            ),
            1,
        )
        _, predictions = probs.sort(1, True)

        # find the predictions that match the target
        correct = predictions.eq(targets.data.view(-1, 1))
        top1 = top1 + correct.narrow(1, 0, 1).sum().item()
        top5 = top5 + correct.narrow(1, 0, min(5, k)).sum().item()  # top5 does not make sense if k < 5
        total += targets.size(0)
    top1 = top1 * 100.0 / total
    top5 = top5 * 100.0 / total
    return top1, top5


def _cases():
    if not REFERENCE.is_file():
        return []
    return json.loads(REFERENCE.read_text())["cases"]


@pytest.mark.skipif(not REFERENCE.is_file(), reason="reference vectors absent")
@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"k{c['k']}-C{c['num_classes']}")
def test_matches_dino_reference_outputs(case):
    acc = knn_classify(np.array(case["train_features"]), case["train_labels"], np.array(case["test_features"]),
                       case["test_labels"], [case["k"]], case["T"], case["num_classes"])
    top1, top5 = acc[case["k"]]
    assert top1 == pytest.approx(case["top1"], abs=1e-9)
    assert top5 == pytest.approx(case["top5"], abs=1e-9)


def _clustered(seed, n, d, c):
    """Unit features around c random class centres, so that accuracies are neither 0 nor 100."""
    g = np.random.default_rng(seed)
    centres = g.normal(size=(c, d))
    labels = g.integers(0, c, n)
    x = centres[labels] + 1.5 * g.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


@pytest.mark.parametrize("n_train,n_test,d,c", [(300, 100, 4, 5), (500, 200, 16, 10), (1000, 300, 32, 7)])
@pytest.mark.parametrize("k,T", [(5, 0.07), (10, 0.07), (20, 0.07), (20, 0.5), (10, 0.02)])
def test_matches_dino_function(n_train, n_test, d, c, k, T):
    seed = n_train + k
    xtr, ytr = _clustered(seed, n_train, d, c)
    xte, yte = _clustered(seed + 1, n_test, d, c)
    ours = knn_classify(xtr, ytr, xte, yte, [k], T, c)[k]
    theirs = dino_knn_classifier(torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte),
                                 torch.from_numpy(yte), k, T, c)
    assert ours == pytest.approx(theirs, abs=1e-9)


def test_hand_worked_example():
    # train: (1,0)→0, (0,1)→1, (1,1)/√2→1, (-1,0)→2; one test point (1,0) of class 0; k = 3.
    # similarities 1, 0, 0.7071, -1 → neighbours: #0 (class 0), #2 (class 1), #1 (class 1).
    # T = 1:    score_0 = e^1 = 2.718 < score_1 = e^0.7071 + e^0 = 3.028 → wrong; class 0 is 2nd.
    # T = 0.07: score_0 = e^14.29 ≫ score_1 = e^10.10 + 1 → right.
    s = 1 / math.sqrt(2)
    xtr = np.array([[1, 0], [0, 1], [s, s], [-1, 0]], np.float32)
    ytr = np.array([0, 1, 1, 2])
    xte, yte = np.array([[1, 0]], np.float32), np.array([0])
    assert knn_classify(xtr, ytr, xte, yte, [3], 1.0, 3) == {3: (0.0, 100.0)}
    assert knn_classify(xtr, ytr, xte, yte, [3], 0.07, 3) == {3: (100.0, 100.0)}
    # k = 1: the nearest is class 0 whatever T; top-5 of k=1 is top-1 (DINO's min(5, k))
    assert knn_classify(xtr, ytr, xte, yte, [1], 1.0, 3) == {1: (100.0, 100.0)}
    # features need not be normalized: scaling a row changes nothing
    assert knn_classify(xtr * 7, ytr, xte * 0.1, yte, [3], 1.0, 3) == {3: (0.0, 100.0)}


def test_chunking_and_several_k_agree():
    xtr, ytr = _clustered(3, 400, 8, 6)
    xte, yte = _clustered(4, 250, 8, 6)
    both = knn_classify(xtr, ytr, xte, yte, [10, 20], 0.07, 6, chunk_size=7)
    assert both[10] == knn_classify(xtr, ytr, xte, yte, [10], 0.07, 6)[10]
    assert both[20] == knn_classify(xtr, ytr, xte, yte, [20], 0.07, 6)[20]


def test_zero_features_give_no_nan():
    xtr = np.zeros((10, 3), np.float32)
    ytr = np.arange(10) % 2
    res = knn_classify(xtr, ytr, np.zeros((4, 3), np.float32), np.zeros(4, np.int64), [3], 0.07, 2)
    assert all(math.isfinite(v) for v in res[3])


@pytest.mark.parametrize("ks,T,msg", [([0], 0.07, "positive"), ([11], 0.07, "more than"), ([5], 0.0, "temperature"),
                                      ([5], "0.1", "temperature must be a number")])  # a str: was a TypeError
def test_bad_arguments(ks, T, msg):
    xtr, ytr = _clustered(0, 10, 3, 2)
    with pytest.raises(UserError, match=msg):
        knn_classify(xtr, ytr, xtr, ytr, ks, T)


def test_knn_eval_on_images():
    g = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    images = (g.random((60, 8, 8)) * 60).astype(np.uint8)
    images[labels == 1, :4] += 150  # class 1 is bright at the top
    ds = ArrayImageSet(images, labels, classes=["dark", "top"], name="toy")
    res = knn_eval(load_encoder("pixels", image_size=8), ds.subset(np.arange(0, 60, 2), "toy@train"),
                   ds.subset(np.arange(1, 60, 2), "toy@val"), ks=(3, 5))
    assert [r["k"] for r in res["results"]] == [3, 5]
    assert res["top1"] == 100.0
    assert res["encoder"]["identity"] == "pixels"
    assert res["train"]["size"] == 30 and res["test"]["name"] == "toy@val"
    assert res["train"]["identity"] != res["test"]["identity"]
    json.dumps(res)  # JSON-ready


def test_knn_eval_needs_labels():
    ds = ArrayImageSet(np.zeros((5, 8, 8), np.uint8), None, name="unlabelled")
    with pytest.raises(UserError, match="no labels"):
        knn_eval(load_encoder("pixels", image_size=8), ds, ds, ks=(1,))


def test_search_over_several_chunks_shows_a_progress_bar(capsys, monkeypatch):
    """The exact search (minutes on ImageNet-size sets) had no progress bar; one chunk (small sets) shows none."""
    monkeypatch.delenv("GENSIS_NO_PROGRESS", raising=False)
    g = np.random.default_rng(0)
    tr, te = g.normal(size=(30, 4)).astype(np.float32), g.normal(size=(9, 4)).astype(np.float32)
    y_tr, y_te = np.arange(30) % 3, np.arange(9) % 3
    knn_classify(tr, y_tr, te, y_te, ks=[3], chunk_size=16)
    assert "k-NN search" not in capsys.readouterr().err
    assert knn_classify(tr, y_tr, te, y_te, ks=[3], chunk_size=4) == knn_classify(tr, y_tr, te, y_te, ks=[3])
    err = capsys.readouterr().err
    assert "k-NN search" in err and "/9" in err


def test_small_temperature_does_not_overflow_into_ties():
    """T = 0.005: exp(s / T) overflowed float32 to inf for both neighbours, the classes tied and the lower index
    won (0 % for a test image whose nearest neighbour is its own class); the votes are now scaled per row."""
    from gensis.eval.knn import knn_classify

    train = np.array([[1.0, 0.0], [0.99, 0.141]], np.float32)
    acc = knn_classify(train, np.array([1, 0]), np.array([[1.0, 0.0]], np.float32), np.array([1]), ks=[2],
                       temperature=0.005, num_classes=2)
    assert acc[2][0] == 100.0
