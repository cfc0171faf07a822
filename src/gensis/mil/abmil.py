"""ABMIL: attention-based deep multiple-instance learning (Ilse, Tomczak & Welling, ICML 2018).

A bag of K instance embeddings h_1..h_K ∈ R^M is pooled into one vector z = Σ_k a_k h_k with attention weights

    plain (Eq. 8):  a_k = softmax_k( wᵀ tanh(V h_kᵀ) )
    gated (Eq. 9):  a_k = softmax_k( wᵀ (tanh(V h_kᵀ) ⊙ sigm(U h_kᵀ)) )

(V, U ∈ R^{L×M}, w ∈ R^L), then classified. Layer names follow the original code (AMLab-Amsterdam/
AttentionDeepMIL, ``model.py``: ``attention_V``, ``attention_U``, ``attention_w``; the plain model's
``attention.0``/``attention.2`` map to ``attention_V.0``/``attention_w``), so its weights load directly.
For slide classification (paper Sec. 9.5.6) the tile embeddings first pass a Linear+ReLU+Dropout to M dims,
and the classifier is a Linear to C logits trained with cross-entropy (the original: one sigmoid output).
"""

from __future__ import annotations

import torch
from torch import nn


class AttentionPool(nn.Module):
    """(K, M) instances → (z (M,), a (K,)): attention weights sum to one over the bag."""

    def __init__(self, dim: int, hidden: int, gated: bool = True):
        super().__init__()
        self.gated = gated
        self.attention_V = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh())
        if gated:
            self.attention_U = nn.Sequential(nn.Linear(dim, hidden), nn.Sigmoid())
        self.attention_w = nn.Linear(hidden, 1)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.attention_V(h)                       # (K, L)
        if self.gated:
            g = g * self.attention_U(h)               # (K, L)
        a = torch.softmax(self.attention_w(g).squeeze(-1), dim=0)   # (K,)
        return a @ h, a                               # (M,), (K,)


class ABMIL(nn.Module):
    """Bag (K, D) → (logits (C,), attention (K,))."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256, attn_dim: int = 128, dropout: float = 0.25,
                 gated: bool = True):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.pool = AttentionPool(hidden, attn_dim, gated)
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if bag.ndim == 3:  # (1, K, D) as the original code's batch of one bag
            bag = bag.squeeze(0)
        z, a = self.pool(self.fc(bag))
        return self.classifier(z), a
