"""What each column of the slide demo's table was computed from, read back from that column's own files.

The slide demo compares encoders (DINO, Gen-DINO, a random init) by ABMIL on the same region bags. Two columns
can print the same numbers for two different reasons: a bug (both columns read the same embeddings or
predictions) or a weak comparison (the encoders barely differ, e.g. a few smoke-size steps leave both teachers
at their shared initialisation, and the MIL picks the same class for every region). ``column_evidence`` tells
them apart, and ``check_distinct`` refuses the first:

    embeddings   sha256 of the region bags' features (``regions-<name>/*.h5``, sorted by name), what the MIL read
    cka          linear CKA (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited",
                 Eq. 5) between two columns' tile embeddings, X, Y centred over tiles:
                     CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)        1 = the same up to rotation and scale
    p_true       mean over all out-of-fold predictions of the probability given to the true class
                 (chance: 1 / number of classes), from ``mil-<name>/<split>/predictions.json``
    probs        those predictions, {region: [p_class...]}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two (N, D1), (N, D2) embeddings of the same N items (formula in the module docstring)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x = x - x.mean(0)
    y = y - y.mean(0)
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / den) if den > 0 else float("nan")


def region_features(regions: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Features (N, D) and coordinates (N, 2) of every region bag in ``regions`` (sorted by file name), and the
    sha256 (12 hex digits) of the features."""
    from gensis.mil.bags import read_bag

    feats, coords = [], []
    h = hashlib.sha256()
    for f in sorted(Path(regions).glob("*.h5")):
        bag = read_bag(f)
        x = np.ascontiguousarray(bag.features, np.float32)
        h.update(f.name.encode("utf-8", "surrogateescape"))
        h.update(x.tobytes())
        feats.append(x)
        coords.append(np.asarray(bag.coords))
    if not feats:
        raise FileNotFoundError(f"no region bags in {regions}")
    return np.concatenate(feats), np.concatenate(coords), h.hexdigest()[:12]


def out_of_fold(mil_run: Path) -> tuple[dict[str, list[float]], dict[str, int]]:
    """{region: probabilities} and {region: true class index} of every split of a finished MIL run."""
    from gensis.rundir import read_json

    meta = read_json(Path(mil_run) / "mil.json", "MIL run description")
    probs: dict[str, list[float]] = {}
    truth: dict[str, int] = {}
    for split in meta["splits"]:
        res = json.loads((Path(mil_run) / split / "predictions.json").read_text())
        for s, y, p in zip(res["slides"], res["y"], res["probs"]):
            probs[s] = [float(v) for v in p]   # k-fold: every region once (seeded splits: the last seed's)
            truth[s] = int(y)
    return probs, truth


def column_evidence(out: Path, names: Iterable[str]) -> dict[str, dict]:
    """For each column ``name`` of the demo in ``out``: its embeddings' fingerprint, CKA with every other
    column, mean p(true class) and its out-of-fold probabilities (see the module docstring)."""
    out = Path(out)
    names = list(names)
    feats, ev = {}, {}
    coords0 = None
    for n in names:
        x, c, fp = region_features(out / f"regions-{n}")
        if coords0 is None:
            coords0 = c
        elif c.shape != coords0.shape or (c != coords0).any():
            raise RuntimeError(f"regions-{n} holds other tiles than regions-{names[0]}: the columns are not "
                               f"comparable")
        probs, truth = out_of_fold(out / f"mil-{n}")
        p_true = float(np.mean([probs[s][truth[s]] for s in probs]))
        feats[n] = x
        ev[n] = {"embeddings": fp, "p_true": p_true, "n_classes": len(next(iter(probs.values()))),
                 "probs": probs}
    for a in names:
        ev[a]["cka"] = {b: (1.0 if a == b else linear_cka(feats[a], feats[b])) for b in names}
    return ev


def check_distinct(evidence: dict[str, dict], labels: dict[str, str]) -> None:
    """Refuse a table two of whose columns were computed from the same embeddings or the same predictions
    (equal by construction: a bug, never a result)."""
    names = list(evidence)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ea, eb = evidence[a], evidence[b]
            what = ("tile embeddings " + ea["embeddings"] if ea["embeddings"] == eb["embeddings"] else
                    "MIL predictions" if ea.get("probs") and ea.get("probs") == eb.get("probs") else None)
            if what:
                raise RuntimeError(f"the slide demo's columns {labels.get(a, a)} and {labels.get(b, b)} come from "
                                   f"identical {what}: a bug (one column reads the other's files), not a result")


def tie_notes(cells: dict[str, list[str]], evidence: dict[str, dict], labels: dict[str, str]) -> list[str]:
    """One line for each group of columns whose printed cells (``cells``: column → its metric cells as the table
    prints them) are all equal: how different their embeddings and predictions are, so a tie reads as what it is."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for n in cells:
        if n in evidence:
            groups.setdefault(tuple(cells[n]), []).append(n)
    notes = []
    for tied in (g for g in groups.values() if len(g) > 1):
        pairs = [(a, b) for i, a in enumerate(tied) for b in tied[i + 1:]]
        gaps = [1 - evidence[a]["cka"][b] for a, b in pairs]
        probs = [evidence[n]["probs"] for n in tied]
        common = sorted(set.intersection(*(set(p) for p in probs)))
        same = sum(len({int(np.argmax(p[s])) for p in probs}) == 1 for s in common)
        dp = max((float(np.abs(np.subtract(pa[s], pb[s])).max()) for s in common
                  for i, pa in enumerate(probs) for pb in probs[i + 1:]), default=float("nan"))
        names = [labels.get(n, n) for n in tied]
        who = " and ".join([", ".join(names[:-1]), names[-1]])
        gap = f"{gaps[0]:.1e}" if len(gaps) == 1 else f"{min(gaps):.1e} to {max(gaps):.1e}"
        fps = ", ".join(evidence[n]["embeddings"] for n in tied)
        line = (f"note: {who} tie on every metric, from different embeddings ({fps}; 1 - linear CKA {gap}): ABMIL "
                f"picks the same class for {same} of {len(common)} regions (largest probability difference {dp:.4f})")
        if "random" in evidence and "random" not in tied:
            line += f"; 1 - CKA to the {labels.get('random', 'random')}: " + ", ".join(
                f"{labels.get(n, n)} {1 - evidence[n]['cka']['random']:.1e}" for n in tied)
        notes.append(line + ". At this size the comparison cannot separate them; the tie is no result.")
    return notes
