"""The content-modality sequence encoder: cached item features → content vectors → causal Transformer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sicsrec.nn.attention import CausalSequenceEncoder, init_weights


class ModalityProjection(nn.Module):
    """in → in/2 → ReLU → hidden, one per modality."""

    def __init__(self, in_dim: int, hidden_size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim // 2), nn.ReLU(), nn.Linear(in_dim // 2, hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ContentEncoder(CausalSequenceEncoder):
    """Content vectors of items (projected features of each modality present, summed,
    L2-normalised) fed, with learned positions, through a causal Transformer.

    The features themselves are not parameters: the caller passes them (frozen, cached).
    """

    def __init__(
        self,
        feature_dims: dict[str, int],
        max_len: int = 50,
        hidden_size: int = 256,
        inner_size: int = 256,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.5,
        attn_dropout: float = 0.5,
        layer_norm_eps: float = 1e-12,
        init_std: float = 0.02,
        activation: str = "gelu",
    ):
        if not feature_dims:
            raise ValueError("the content encoder needs at least one modality's features")
        super().__init__(
            hidden_size, inner_size, num_layers, num_heads, dropout, attn_dropout, max_len, layer_norm_eps, activation
        )
        self.projections = nn.ModuleDict({m: ModalityProjection(d, hidden_size) for m, d in feature_dims.items()})
        init_weights(self, init_std)

    def item_vectors(self, features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """(num_items + 1, hidden): the sum over modalities an item has, L2-normalised; row 0 = 0."""
        total = None
        for m, proj in self.projections.items():
            v = proj(features[m]) * masks[m].unsqueeze(-1).to(features[m].dtype)
            total = v if total is None else total + v
        total = F.normalize(total, dim=-1)
        return torch.cat([torch.zeros_like(total[:1]), total[1:]])

    def forward(self, items: torch.Tensor, table: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """``table`` holds the content vectors of all items (``item_vectors``)."""
        return self.encode(table[items], items, last_only)
