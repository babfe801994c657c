"""The ID-modality sequence encoder (SASRec): item-ID + position embeddings → causal Transformer."""

from __future__ import annotations

import torch
from torch import nn

from sicsrec.nn.attention import TransformerLayer, init_weights, run_layers


class IDEncoder(nn.Module):
    """Encodes right-padded item-id sequences (B, L) into hidden states (B, L, H).

    The item table (``item_embedding``) is shared between input and scoring, as in SASRec.
    """

    def __init__(self, num_items: int, hidden_size: int = 256, inner_size: int = 256, num_layers: int = 2,
                 num_heads: int = 2, dropout: float = 0.5, attn_dropout: float = 0.5, max_len: int = 50,
                 layer_norm_eps: float = 1e-12, init_std: float = 0.02, activation: str = "gelu"):
        super().__init__()
        self.max_len = max_len
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(hidden_size, num_heads, inner_size, dropout, attn_dropout, layer_norm_eps, activation)
            for _ in range(num_layers))
        init_weights(self, init_std)

    def forward(self, items: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Hidden states (B, L, H), or with ``last_only`` each row's last real state (B, H)."""
        if items.shape[1] > self.max_len:
            raise ValueError(f"input of {items.shape[1]} items exceeds max_len {self.max_len}")
        positions = torch.arange(items.shape[1], device=items.device)
        h = self.dropout(self.norm(self.item_embedding(items) + self.position_embedding(positions)))
        return run_layers(self.layers, h, items, last_only)
