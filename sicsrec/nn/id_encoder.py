"""The ID-modality sequence encoder (SASRec): item vectors + position embeddings → causal Transformer."""

from __future__ import annotations

import torch
from torch import nn

from sicsrec.nn.attention import CausalSequenceEncoder, init_weights
from sicsrec.nn.item_encoder import ContentMap


class IDEncoder(CausalSequenceEncoder):
    """Encodes right-padded item-id sequences (B, L) into hidden states (B, L, H).

    One item table is shared between input and scoring, as in SASRec: the ID rows
    (``item_embedding``) or, given ``feature_dims``, :meth:`item_table` — each item's ID row plus a
    learned map of its content features (:class:`ContentMap`). There an item no training part holds
    has its ID row masked (training only ever pushed it down) and is scored through its content
    alone, with nothing fitted after training; ``id_row_dropout`` masks a random share of ID rows in
    each training step, so that the content part learns to rank an item on its own.
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
        feature_dims: dict[str, int] | None = None,
        id_row_dropout: float = 0.0,
    ):
        super().__init__(
            hidden_size, inner_size, num_layers, num_heads, dropout, attn_dropout, max_len, layer_norm_eps, activation
        )
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.content_map = ContentMap(feature_dims, hidden_size) if feature_dims else None
        self.id_row_dropout = id_row_dropout
        init_weights(self, init_std)

    def item_table(
        self,
        features: dict[str, torch.Tensor] | None = None,
        masks: dict[str, torch.Tensor] | None = None,
        seen: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(num_items + 1, H): the vectors of all items, for the input and for scoring. ``seen``
        (num_items + 1,) bool: which items occur in training (None: all)."""
        rows = self.item_embedding.weight
        if self.content_map is None:
            return rows
        keep = torch.ones(len(rows), 1, dtype=torch.bool, device=rows.device) if seen is None else seen[:, None]
        if self.training and self.id_row_dropout > 0:
            keep = keep & (torch.rand(len(rows), 1, device=rows.device) >= self.id_row_dropout)
        return rows * keep + self.content_map(features, masks)

    def forward(self, items: torch.Tensor, last_only: bool = False, table: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, L, H), or with ``last_only`` each row's last real state (B, H);
        ``table``: the item vectors read (:meth:`item_table`; None: the ID rows)."""
        return self.encode(self.item_embedding(items) if table is None else table[items], items, last_only)
