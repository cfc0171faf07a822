"""Fidelity scores of bank entries, and the filters ``gensis pretrain --bank`` builds from them (beyond the paper,
which keeps every sample; issue 15 item 3).

Score of an entry (computed by ``gensis bank generate`` in the same batched pass that generates it):

    score = cos( e(x̂), c )

    x̂   the generated image (uint8, at the generator's resolution, before any ``gen.image_size`` resize)
    e    the conditioning encoder (``generator.encode``), the one that embedded the dataset
    c    the entry's conditioning embedding: e(I) for a generative entry, slerp/lerp(e(I_1), e(I_2), α) for an
         interpolated one (exactly the vector the generator was conditioned on)

Storage: ``BANK/scores/score-SSSSSS.npy``, float32 (E_s,), one per shard, rows in the shard's file order (so
row (i − s·shard_size)·E + slot). Written atomically just *before* its shard, so every complete shard of a scored
bank has its scores; ``bank.json`` carries ``"scores": {...}`` when the bank records them (banks made before
this feature have no scores and stay readable; filtering them is a one-line error).

Filters (config ``gen.bank_min_score``, ``gen.bank_keep_quantile``, ``gen.bank_weighting``):
    keep = (score ≥ min_score) ∧ (score ≥ the (1 − q)-quantile of the scores of its kind)
    (the quantile is taken separately over generative and over interpolated entries: interpolations sit
    between two images and score lower by construction)
    weight = keep · max(score, 1e-6) with ``bank_weighting: score``, else keep
Weights are *sampling* weights: the generative entry k and the interpolation α of a sample are drawn with
probability ∝ weight among that image's entries (``gensis.ssl.gen.GenViews``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gensis.errors import UserError
from gensis.rundir import atomic_write_bytes

SCORE_DIR = "scores"
SCORES_INFO = {"kind": "cosine", "of": "encoder(generated image) vs its conditioning embedding",
               "dir": SCORE_DIR, "dtype": "float32"}
WEIGHTINGS = ("none", "score")
QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def score_name(s: int) -> str:
    return f"score-{s:06d}.npy"


def cosine_scores(generator, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """cos(encode(images), cond) per row: images uint8 (B, 3, S, S), cond float (B, D) → float32 (B,) on the
    encoder's device (one batched encoder pass, no per-image host sync)."""
    e = generator.encode(images)  # (B, D)
    c = cond.to(device=e.device, dtype=torch.float32)
    return F.cosine_similarity(e.float(), c, dim=1, eps=1e-8)


def write_scores(path: Path, scores: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(scores, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def read_scores(path: Path, n: int) -> np.ndarray:
    """float32 (n,); UserError when absent, unreadable or of the wrong length."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read fidelity scores {path}: {e}") from None
    if a.shape != (n,) or a.dtype != np.float32:
        raise UserError(f"fidelity scores {path}: shape {a.shape} {a.dtype}, expected ({n},) float32")
    return a


def has_scores(header: dict) -> bool:
    return isinstance(header.get("scores"), dict)


def quantile_table(scores: np.ndarray, num_generative: int) -> str:
    """Score quantiles per kind (all | gen | interp), one line each, to choose a threshold."""
    scores = np.asarray(scores, np.float32)  # (N, E)
    parts = [("all", scores.ravel()), ("gen", scores[:, :num_generative].ravel()),
             ("interp", scores[:, num_generative:].ravel())]
    head = "fidelity score quantiles (cosine to the conditioning embedding): " + \
        " ".join(f"q{int(round(q * 100)):02d}" for q in QUANTILES)
    lines = [head]
    for name, v in parts:
        if v.size:
            qs = np.quantile(v, QUANTILES)
            lines.append(f"  {name:6s} n={v.size:<8d} " + " ".join(f"{x:+.3f}" for x in qs)
                         + f"  mean {v.mean():+.3f}")
    return "\n".join(lines)


def keep_mask(scores: np.ndarray, num_generative: int, min_score: float | None,
              keep_quantile: float | None) -> np.ndarray:
    """bool (N, E): the entries that survive the threshold and the per-kind top-quantile filter."""
    scores = np.asarray(scores, np.float32)  # (N, E)
    keep = np.ones(scores.shape, dtype=bool)
    if min_score is not None:
        keep &= scores >= float(min_score)
    if keep_quantile is not None and float(keep_quantile) < 1.0:
        for sl in (np.s_[:, :num_generative], np.s_[:, num_generative:]):
            block = scores[sl]
            if block.size:
                thr = np.quantile(block, 1.0 - float(keep_quantile))
                keep[sl] &= block >= thr
    return keep


def filter_active(g: dict) -> bool:
    return (g.get("bank_min_score") is not None or g.get("bank_keep_quantile") is not None
            or g.get("bank_weighting", "none") != "none")


def entry_weights(scores: np.ndarray, num_generative: int, g: dict) -> np.ndarray:
    """float64 (N, E) sampling weights from the ``gen.bank_*`` keys (0 = never drawn)."""
    q = g.get("bank_keep_quantile")
    if q is not None and not 0.0 < float(q) <= 1.0:
        raise UserError(f"gen.bank_keep_quantile must be in (0, 1], got {q}")
    if g.get("bank_weighting", "none") not in WEIGHTINGS:
        raise UserError(f"gen.bank_weighting must be one of {', '.join(WEIGHTINGS)}, got {g.get('bank_weighting')!r}")
    m = g.get("bank_min_score")
    if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float, np.number)) or not -1 <= m <= 1):
        # as the config's rule; BankDataset(min_score=nan or 2) kept no entry without a word, '0.5' was a ValueError
        raise UserError(f"gen.bank_min_score (BankDataset's min_score) must be a number in [-1, 1] (a cosine) or "
                        f"None, got {m!r}")
    keep = keep_mask(scores, num_generative, m, q)
    w = keep.astype(np.float64)
    if g.get("bank_weighting", "none") == "score":
        w *= np.maximum(np.asarray(scores, np.float64), 1e-6)
    return w


def draw(weights: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One column per row with probability ∝ weights (B, C) → (column (B,) int64, row has any weight (B,))."""
    tot = weights.sum(1)  # (B,)
    u = rng.random(len(weights)) * tot
    j = (np.cumsum(weights, 1) <= u[:, None]).sum(1)  # first column whose cumulative weight exceeds u
    return np.minimum(j, weights.shape[1] - 1).astype(np.int64), tot > 0
