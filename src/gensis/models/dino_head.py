"""DINO projection head (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision Transformers").

    h = MLP(x)              3 layers, GELU, hidden width ``hidden_dim``, output ``bottleneck_dim``
    z = h / ||h||_2         L2-normalized bottleneck
    out = W z               weight-normalized linear layer (no bias) to ``out_dim`` prototypes;
                            with ``norm_last_layer`` the norm g of W is fixed to 1 (DINO's stability trick)
    ``use_bn``: BatchNorm1d after each hidden linear layer (before GELU), DINO's ``--use_bn_in_head``
    (``DINOHead(use_bn=...)`` in facebookresearch/dino ``vision_transformer.py``; off for ViTs there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3, norm_last_layer: bool = True, use_bn: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim if nlayers > 1 else bottleneck_dim)]
        if nlayers > 1:
            layers += [nn.BatchNorm1d(hidden_dim)] if use_bn else []
            layers.append(nn.GELU())
            for _ in range(nlayers - 2):
                layers.append(nn.Linear(hidden_dim, hidden_dim))
                layers += [nn.BatchNorm1d(hidden_dim)] if use_bn else []
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        g = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            g.fill_(1.0)
        g.requires_grad_(not norm_last_layer)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def last_layer_params(self) -> list[nn.Parameter]:
        return [p for p in self.last_layer.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)  # (B, bottleneck)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)  # (B, out_dim)
