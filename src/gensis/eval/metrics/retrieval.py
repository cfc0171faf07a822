"""Average precision of ranked retrieval: revisitop (revisited Oxford/Paris) and Copydays.

revisitop (Radenović et al., CVPR 2018; ``python/evaluate.py`` of filipradenovic/revisitop @ be39832):

    compute_ap(pos, nres)    pos = 0-based ranks of the positives (junk already removed), nres = #positives
        AP = Σ_j ½ (P0_j + P1_j) / nres,   P0_j = j / pos_j (1 when pos_j = 0),   P1_j = (j + 1) / (pos_j + 1)
        (the trapezoid rule over the precision-recall curve)

    compute_map(ranks, gnd, kappas)   ranks (db, nq): column q lists database indices by decreasing
        similarity to query q; gnd[q] = {"ok": [...], "junk": [...]}
        - a query without positives gets AP = NaN and P@k = NaN and is left out of the means
        - junk images are removed from the ranking: each positive's rank drops by the number of junk
          images ranked before it
        - P@k of a query = #{positives with 1-based rank ≤ kq} / kq with kq = min(max rank, k)
          (the original's quirk: k shrinks to the last positive's rank)

    Protocols (``example_evaluate.py``): Easy ok = easy, junk = junk + hard; Medium ok = easy + hard,
    junk = junk; Hard ok = hard, junk = junk + easy.

Copydays (DINO ``eval_copy_detection.py``, from Douze et al.): ``score_ap_from_ranks_1`` is the same
trapezoid AP over the ranks at which the positives appear in a truncated result list.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def compute_ap(pos: np.ndarray, nres: int) -> float:
    """revisitop ``compute_ap``: AP from the sorted 0-based ranks of the positives among ``nres``."""
    ap = 0.0
    recall_step = 1.0 / nres
    for j, rank in enumerate(np.asarray(pos)):
        precision_0 = 1.0 if rank == 0 else float(j) / rank
        precision_1 = float(j + 1) / (rank + 1)
        ap += (precision_0 + precision_1) * recall_step / 2.0
    return ap


def compute_map(ranks: np.ndarray, gnd: Sequence[dict], kappas: Sequence[int] = ()
                ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """revisitop ``compute_map``: (mAP, per-query AP (nq,), mP@k (K,), per-query P@k (nq, K)).

    ``ranks``: (db, nq) database indices, best first, per query column. NaN for queries without positives.
    """
    ranks = np.asarray(ranks)
    nq = len(gnd)
    aps = np.zeros(nq)
    pr = np.zeros(len(kappas))
    prs = np.zeros((nq, len(kappas)))
    total, nempty = 0.0, 0
    for i in range(nq):
        qgnd = np.asarray(gnd[i]["ok"], dtype=np.int64)
        if qgnd.shape[0] == 0:
            aps[i] = np.nan
            prs[i, :] = np.nan
            nempty += 1
            continue
        qgndj = np.asarray(gnd[i].get("junk", []), dtype=np.int64)
        column = ranks[:, i]
        pos = np.flatnonzero(np.isin(column, qgnd))  # sorted 0-based positions of the positives
        junk = np.flatnonzero(np.isin(column, qgndj))
        if len(junk):
            # each positive moves up by the number of junk images ranked before it
            pos = pos - np.searchsorted(junk, pos, side="left")
        ap = compute_ap(pos, len(qgnd))
        total += ap
        aps[i] = ap
        pos1 = pos + 1  # 1-based
        for j, k in enumerate(kappas):
            kq = min(int(pos1.max()), int(k))
            prs[i, j] = (pos1 <= kq).sum() / kq
        pr = pr + prs[i, :]
    n = nq - nempty
    with np.errstate(invalid="ignore", divide="ignore"):
        return (total / n if n else float("nan")), aps, pr / n if n else pr * np.nan, prs


PROTOCOLS = ("easy", "medium", "hard")


def revisited_gnd(gnd: Sequence[dict], protocol: str) -> list[dict]:
    """The ok/junk lists of one revisited protocol from the benchmark's easy/hard/junk lists."""
    out = []
    for g in gnd:
        easy, hard, junk = (list(np.asarray(g.get(k, []), dtype=np.int64).ravel()) for k in ("easy", "hard", "junk"))
        if protocol == "easy":
            out.append({"ok": easy, "junk": junk + hard})
        elif protocol == "medium":
            out.append({"ok": easy + hard, "junk": junk})
        elif protocol == "hard":
            out.append({"ok": hard, "junk": junk + easy})
        else:
            raise ValueError(f"unknown protocol {protocol!r}; one of {PROTOCOLS}")
    return out


def score_ap_from_ranks_1(ranks: Sequence[int], nres: int) -> float:
    """Copydays AP (DINO ``eval_copy_detection.py``): ``ranks`` = ordered ranks of the true positives
    within the returned list, ``nres`` = number of positives in the dataset."""
    ap = 0.0
    recall_step = 1.0 / nres
    for ntp, rank in enumerate(ranks):
        precision_0 = 1.0 if rank == 0 else ntp / float(rank)
        precision_1 = (ntp + 1) / float(rank + 1)
        ap += (precision_1 + precision_0) * recall_step / 2.0
    return ap
