"""A recurrent ID-modality sequence encoder (GRU4Rec-style), injectable in place of the SASRec one."""

from __future__ import annotations

import torch
from torch import nn

from sicsrec.nn.mix_decoder import gather_last


class GRUEncoder(nn.Module):
    """Right-padded item-id sequences (B, L) → hidden states (B, L, H); with ``last_only`` each row's
    last real state (B, H). ``item_embedding`` is the table items are scored against.

    The contract of an ID sequence encoder for ``Stage1Module(id_encoder=...)``: built as
    ``cls(num_items, max_len, **init_args)``, called as ``encoder(items, last_only=False, table=None)``
    (``table``: the item vectors to read instead of its own rows), with an ``item_embedding`` of
    ``num_items + 1`` rows (row 0 = padding). Items carrying their content (``item_content``) need
    the SASRec encoder's ``item_table``.
    """

    def __init__(self, num_items: int, max_len: int, hidden_size: int = 64, num_layers: int = 1, dropout: float = 0.1):
        super().__init__()
        self.max_len = max_len
        self.item_embedding = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden_size, hidden_size, num_layers, batch_first=True)

    def forward(self, items: torch.Tensor, last_only: bool = False, table: torch.Tensor | None = None) -> torch.Tensor:
        vectors = self.item_embedding(items) if table is None else table[items]
        states, _ = self.gru(self.dropout(vectors))  # causal: padding comes after
        return gather_last(states, items) if last_only else states
