"""Multi-head attention and the post-LN Transformer layer used by every sequence encoder.

q/k/v/out are separate ``nn.Linear`` layers (named ``query``, ``key``, ``value``, ``out``) so
that peft's LoRA can target them by name. The layer follows RecBole's SASRec: residual, then
LayerNorm, after attention and after the feed-forward block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class MultiHeadAttention(nn.Module):
    """Attention of ``x`` over ``memory`` (self-attention when ``memory`` is None), then add & norm."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, attn_dropout: float, layer_norm_eps: float):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.num_heads, self.attn_dropout = num_heads, attn_dropout
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, h = t.shape
        return t.view(b, n, self.num_heads, h // self.num_heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, visible: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Causal attention: position i sees memory positions ≤ i.

        Sequences are right-padded, so a real position never sees padding under the causal
        mask; padded positions produce values that nobody reads. ``visible`` (B, L_memory),
        True where a key may be seen, replaces the causal mask when ``x`` is not aligned with
        ``memory`` (e.g. only each row's last position is queried).
        """
        memory = x if memory is None else memory
        q, k, v = self._heads(self.query(x)), self._heads(self.key(memory)), self._heads(self.value(memory))
        mask = None if visible is None else visible[:, None, None, :]
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=visible is None, dropout_p=self.attn_dropout if self.training else 0.0
        )
        context = context.transpose(1, 2).reshape(x.shape)
        return self.norm(x + self.dropout(self.out(context)))


class FeedForward(nn.Module):
    def __init__(
        self, hidden_size: int, inner_size: int, dropout: float, layer_norm_eps: float, activation: str = "gelu"
    ):
        super().__init__()
        self.dense_in = nn.Linear(hidden_size, inner_size)
        self.activation = ACTIVATIONS[activation]()
        self.dense_out = nn.Linear(inner_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.dense_out(self.activation(self.dense_in(x)))))


class TransformerLayer(nn.Module):
    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        inner_size: int,
        dropout: float,
        attn_dropout: float,
        layer_norm_eps: float,
        activation: str = "gelu",
    ):
        super().__init__()
        self.attention = MultiHeadAttention(hidden_size, num_heads, dropout, attn_dropout, layer_norm_eps)
        self.feed_forward = FeedForward(hidden_size, inner_size, dropout, layer_norm_eps, activation)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None, visible: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.feed_forward(self.attention(x, memory, visible))


def last_index(items: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real (non-padding) position in right-padded inputs."""
    return (items > 0).sum(1).clamp(min=1) - 1


def last_items(items: torch.Tensor) -> torch.Tensor:
    """Each row's last real item (padding 0 for an empty row): what last-item baselines look at."""
    return items[torch.arange(len(items), device=items.device), last_index(items)]


def run_layers(layers: nn.ModuleList, h: torch.Tensor, items: torch.Tensor, last_only: bool) -> torch.Tensor:
    """Causal Transformer layers over (B, L, H); with ``last_only``, each row's last real state (B, H).

    ``last_only`` runs the final layer for the last position alone: a causal model's user
    state needs nothing else, and inference gets a third cheaper.
    """
    for layer in layers[:-1] if last_only else layers:
        h = layer(h)
    if not last_only:
        return h
    last = last_index(items)
    query = h[torch.arange(h.shape[0], device=h.device), last][:, None]
    visible = torch.arange(items.shape[1], device=items.device)[None] <= last[:, None]
    return layers[-1](query, h, visible)[:, 0]


def init_weights(module: nn.Module, std: float) -> None:
    """RecBole's initialisation: N(0, std) for linears and embeddings, LayerNorm at identity."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CausalSequenceEncoder(nn.Module):
    """Item vectors + learned positions → LayerNorm, dropout → causal Transformer layers: the
    trunk the ID and the content encoders share (they differ only in where item vectors come from)."""

    def __init__(
        self,
        hidden_size: int,
        inner_size: int,
        num_layers: int,
        num_heads: int,
        dropout: float,
        attn_dropout: float,
        max_len: int,
        layer_norm_eps: float,
        activation: str,
    ):
        super().__init__()
        self.max_len = max_len
        self.position_embedding = nn.Embedding(max_len, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(hidden_size, num_heads, inner_size, dropout, attn_dropout, layer_norm_eps, activation)
            for _ in range(num_layers)
        )

    def encode(self, vectors: torch.Tensor, items: torch.Tensor, last_only: bool) -> torch.Tensor:
        """Hidden states (B, L, H), or with ``last_only`` each row's last real state (B, H)."""
        if items.shape[1] > self.max_len:
            raise ValueError(f"input of {items.shape[1]} items exceeds max_len {self.max_len}")
        positions = torch.arange(items.shape[1], device=items.device)
        h = self.dropout(self.norm(vectors + self.position_embedding(positions)))
        return run_layers(self.layers, h, items, last_only)
