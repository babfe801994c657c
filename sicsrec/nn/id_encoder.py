"""The ID-modality sequence encoder (SASRec): item-ID + position embeddings → causal Transformer."""

from __future__ import annotations

import torch
from torch import nn

from sicsrec.nn.attention import CausalSequenceEncoder, init_weights


class IDEncoder(CausalSequenceEncoder):
    """Encodes right-padded item-id sequences (B, L) into hidden states (B, L, H).

    The item table (``item_embedding``) is shared between input and scoring, as in SASRec.
    """

    def __init__(
        self,
        num_items: int,
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
        super().__init__(
            hidden_size, inner_size, num_layers, num_heads, dropout, attn_dropout, max_len, layer_norm_eps, activation
        )
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        init_weights(self, init_std)

    def forward(self, items: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Hidden states (B, L, H), or with ``last_only`` each row's last real state (B, H)."""
        return self.encode(self.item_embedding(items), items, last_only)
