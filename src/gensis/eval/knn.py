"""Weighted k-nearest-neighbour classification on frozen features (DINO's k-NN protocol).

Protocol (Caron et al., 2021, Sec. 4.1 and ``eval_knn.py``; Gen-SIS supplementary Sec. 9.5.4): extract
the features of the training and test images with the frozen pretrained encoder; the k-NN classifier
compares the feature of a test image to the k nearest stored training features and assigns a label by
a weighted vote. Gen-SIS reports k ∈ {10, 20} ("10-NN or 20-NN consistently yields the best results").

Notation (paper / DINO code → this module)
    f_i, y_i        train_features[i], train_labels[i]     the stored bank, L2-normalized, (N, D)
    f               a row of test_features                   L2-normalized, (D,)
    s_i = f · f_i   sims                                     cosine similarity, (B, k)
    T               temperature                              0.07 in DINO
    C               num_classes

Steps (per chunk of test images)
    1. the k training features with the largest s_i (exact inner-product search, faiss ``IndexFlatIP``)
    2. weights w_i = exp(s_i / T) (computed as exp((s_i - s_1) / T): the same votes scaled per row, no overflow
       for small T)
    3. class scores  score_c = Σ_{i ∈ kNN} w_i · [y_i = c]                       (B, C)
    4. prediction = argmax_c score_c; top-5 correct if y is among the 5 highest scores
       (ties broken towards the lower class index, as a stable descending sort in DINO's code)

Neighbours are searched once for the largest k; the smaller k's use a prefix of the same sorted list.
Results equal DINO's ``knn_classifier`` (tests compare against its outputs on seeded features).
"""

from __future__ import annotations

import argparse
import numbers
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from gensis.errors import UserError
from gensis.eval.common import (describe_data, describe_encoder, labels_of, num_classes_of, warn_if_test_is_train,
                                warn_unseen_test_classes)

if TYPE_CHECKING:  # torch is imported where it is used, so `gensis eval --help` starts without it
    import torch

    from gensis.data.sources import ImageSet
    from gensis.models.encoder import Encoder

DEFAULT_KS = (10, 20)
DEFAULT_TEMPERATURE = 0.07


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float32; all-zero rows stay zero, as ``F.normalize``)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: np.ndarray = x / np.maximum(norms, eps)
    return out


def check_knn_args(ks: Sequence[int], temperature: float, n_train: int) -> list[int]:
    """The sorted distinct k's; a UserError for k < 1, k > n_train or T <= 0."""
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise UserError(f"k must be positive integers, got {ks}")
    if ks[-1] > n_train:
        raise UserError(f"k={ks[-1]} is more than the {n_train} training images: use k <= {n_train} (--k)")
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise UserError(f"the temperature must be a number > 0, got {temperature!r}")  # "0.1" was a TypeError
    return ks


def knn_classify(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
                 test_labels: np.ndarray, ks: Sequence[int] = DEFAULT_KS, temperature: float = DEFAULT_TEMPERATURE,
                 num_classes: int | None = None, chunk_size: int = 4096) -> dict[int, tuple[float, float]]:
    """Weighted k-NN accuracies: ``{k: (top1 %, top5 %)}`` for every k in ``ks``.

    Features are L2-normalized here (already-normalized features are unchanged). ``chunk_size`` test
    rows are searched at a time, so memory stays O(chunk_size · max k) whatever the test-set size.
    Top-5 counts the min(5, k, C) best-scored classes (DINO: min(5, k)).
    """
    import faiss
    import torch

    from gensis.progress import progress

    train_labels = np.asarray(train_labels, dtype=np.int64)
    test_labels = np.asarray(test_labels, dtype=np.int64)
    ks = check_knn_args(ks, temperature, len(train_labels))
    n_train = len(train_labels)
    if len(train_features) != n_train or len(test_features) != len(test_labels):
        raise ValueError("features and labels differ in length")
    if len(test_labels) == 0:
        raise UserError("the test set is empty")
    C = int(num_classes if num_classes is not None else max(train_labels.max(), test_labels.max()) + 1)

    bank = l2_normalize(train_features)  # (N, D)
    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank)
    y_bank = torch.from_numpy(train_labels)
    k_max = ks[-1]
    correct = {k: np.zeros(2, dtype=np.int64) for k in ks}  # top1, top5 counts
    # exact search is minutes on ImageNet-size sets: a bar with ETA over the chunks (none for a single chunk)
    bar = progress(total=len(test_labels), desc="k-NN search", leave=False, disable=len(test_labels) <= chunk_size)
    for start in range(0, len(test_labels), chunk_size):
        q = l2_normalize(test_features[start:start + chunk_size])  # (B, D)
        y = torch.from_numpy(test_labels[start:start + chunk_size])  # (B,)
        sims, idx = index.search(q, k_max)  # step 1: (B, k_max) each, sorted by decreasing similarity
        sims_t = torch.from_numpy(sims)
        neigh_labels = y_bank[torch.from_numpy(idx)]  # (B, k_max)
        # step 2: (B, k_max); exp((s_i - s_1) / T), the same votes up to each row's factor exp(s_1 / T) (neither
        # the ranking of classes changes), without float32's overflow to inf (exp(s / T) for T < 1 / 88.7): tied
        # inf scores gave the lower class index, a wrong accuracy without a word
        weights = ((sims_t - sims_t[:, :1]) / temperature).exp()
        for k in ks:
            scores = torch.zeros(len(y), C, dtype=torch.float32)  # step 3: (B, C)
            scores.scatter_add_(1, neigh_labels[:, :k], weights[:, :k])
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # step 4: (B, C)
            hit = order == y[:, None]  # (B, C)
            correct[k][0] += int(hit[:, 0].sum())
            correct[k][1] += int(hit[:, :min(5, k, C)].sum())
        bar.update(len(y))
    bar.close()
    n = len(test_labels)
    return {k: (float(100.0 * c[0] / n), float(100.0 * c[1] / n)) for k, c in correct.items()}


def knn_eval(encoder: Encoder, train_ds: ImageSet, test_ds: ImageSet, ks: Sequence[int] = DEFAULT_KS,
             T: float = DEFAULT_TEMPERATURE, device: str | torch.device = "cpu", batch_size: int = 256,
             features: tuple[np.ndarray, np.ndarray] | None = None, cache: Any = None) -> dict[str, Any]:
    """DINO k-NN evaluation of a frozen ``encoder`` (``gensis.models.encoder.Encoder``).

    Returns a JSON-ready dict: ``results`` (one row per k: ``k``, ``top1``, ``top5`` in %), the best row's
    ``k``/``top1``/``top5``, ``temperature``, and the identities of the encoder and both datasets.
    ``features`` (train, test) skips extraction when they are already at hand.
    """
    from gensis.eval.features import extract_features

    y_train, y_test = labels_of(train_ds, "train"), labels_of(test_ds, "test")
    check_knn_args(ks, T, len(train_ds))  # before the (slow) feature extraction
    warn_if_test_is_train(train_ds, test_ds)
    warn_unseen_test_classes(test_ds, y_train, y_test)
    t0 = time.time()
    if features is None:
        f_train = extract_features(encoder, train_ds, batch_size, device, desc="train features", cache=cache)
        f_test = extract_features(encoder, test_ds, batch_size, device, desc="test features", cache=cache)
    else:
        f_train, f_test = features
    t_feat = time.time() - t0
    num_classes = num_classes_of(train_ds, test_ds, y_train, y_test)
    acc = knn_classify(f_train, y_train, f_test, y_test, ks, T, num_classes)
    rows = [{"k": k, "top1": a[0], "top5": a[1]} for k, a in acc.items()]
    best = max(rows, key=lambda r: (r["top1"], r["top5"]))
    return {
        "protocol": "knn",
        "encoder": describe_encoder(encoder),
        "train": describe_data(train_ds),
        "test": describe_data(test_ds),
        "temperature": T,
        "results": rows,
        "k": best["k"], "top1": best["top1"], "top5": best["top5"],
        "seconds": {"features": round(t_feat, 2), "total": round(time.time() - t0, 2)},
    }


# ---------------------------------------------------------------------------------------------------------
# command line: gensis eval knn


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from gensis.eval.common import add_data_options
    from gensis.eval.options import add_encoder_options, add_runtime_options

    add_encoder_options(p)
    add_data_options(p)
    p.add_argument("--k", type=int, nargs="+", action="extend", default=None, metavar="K",
                   help="numbers of neighbours to evaluate, one result row each, in increasing order; repeating "
                        "the option adds values (--k 5 --k 3 is --k 3 5) (default: "
                        f"{' '.join(map(str, DEFAULT_KS))})")
    p.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, metavar="T",
                   help="temperature T of the vote weights exp(similarity / T)")
    add_runtime_options(p)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    from gensis.eval.common import prepare_classification

    ks = check_knn_args(args.k or DEFAULT_KS, args.temperature, 10**12)  # sorted, distinct; before loading anything
    encoder, train_ds, test_ds, device, cache = prepare_classification(args)  # type: ignore[no-untyped-call]
    return knn_eval(encoder, train_ds, test_ds, ks=ks, T=args.temperature, device=device,
                    batch_size=args.feature_batch_size, cache=cache)


def format_knn(res: dict[str, Any]) -> str:
    from gensis.eval.common import footer_lines, header_lines

    lines = header_lines(f"k-NN (T={res['temperature']:g})", res)
    lines.append(f"{'k':>6}  {'top-1':>7}  {'top-5':>7}")
    lines += [f"{r['k']:>6}  {r['top1']:7.2f}  {r['top5']:7.2f}" for r in res["results"]]
    return "\n".join(lines + footer_lines(res))


from gensis.eval.registry import Evaluation  # noqa: E402

EVALUATION = Evaluation(
    name="knn",
    summary="weighted k-NN classifier on L2-normalized features (DINO, T=0.07, k=10/20)",
    description="Weighted k-NN (DINO): cosine similarity to the k nearest training features, votes "
                "weighted by exp(similarity / T); top-1 and top-5 accuracy on the test set.",
    add_arguments=_add_arguments, run=_run, format=format_knn,
    headline=lambda r: [(f"k-NN top-1 (k={r['k']})", r["top1"])],
    data_options=("train",),
)
