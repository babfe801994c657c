"""The mix-modality sequence decoder and the fusion of the three streams into one user vector."""

from __future__ import annotations

import torch
from torch import nn

from sicsrec.nn.attention import TransformerLayer, init_weights, last_index


class MixDecoder(nn.Module):
    """Stacked layers of causal cross-attention — queries from the ID stream, keys and values
    from the content stream (position i sees content positions ≤ i) — and a feed-forward
    block; each layer's output is the next layer's query stream."""

    def __init__(
        self,
        hidden_size: int = 256,
        inner_size: int = 256,
        num_layers: int = 1,
        num_heads: int = 2,
        dropout: float = 0.5,
        attn_dropout: float = 0.5,
        layer_norm_eps: float = 1e-12,
        init_std: float = 0.02,
        activation: str = "gelu",
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(hidden_size, num_heads, inner_size, dropout, attn_dropout, layer_norm_eps, activation)
            for _ in range(num_layers)
        )
        init_weights(self, init_std)

    def forward(self, id_states: torch.Tensor, content_states: torch.Tensor) -> torch.Tensor:
        h = id_states
        for layer in self.layers:
            h = layer(h, content_states)
        return h


class Fusion(nn.Module):
    """Concatenate the last-position states of the ID, content and decoder streams → one user vector.

    ``outputs=1``: a vector in the ID table's space that starts as the ID stream passed through.
    ``outputs=2``: ``[ID part ; content part]``, scored against ``[ID table ; content table]``,
    starting as ``[ID stream ; content stream]`` — the sum of both pre-trained encoders' scores.

    The projection is written as that pass-through plus a learned ``delta`` (a linear map of all
    streams, zero at the start), so weight decay pulls it back to the pre-trained combination
    rather than to zero: the encoders were fit on the same training data, and an unconstrained
    projection learns to trust whichever stream memorised it best.
    """

    def __init__(
        self, hidden_size: int = 256, streams: int = 3, outputs: int = 1, scales: tuple[float, ...] | None = None
    ):
        super().__init__()
        self.outputs = outputs
        self.scales = tuple(scales or (1.0,) * outputs)
        self.delta = nn.Linear(streams * hidden_size, outputs * hidden_size)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(self, *states: torch.Tensor) -> torch.Tensor:
        """``scales`` multiply the passed-through streams only (the content stream's 1/τ): the
        learned part sees the states at their own scale, so an optimiser step means the same
        for every stream."""
        passed = torch.cat([s * c for s, c in zip(states[: self.outputs], self.scales)], dim=-1)
        return passed + self.delta(torch.cat(states, dim=-1))


def gather_last(h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return h[torch.arange(h.shape[0], device=h.device), last_index(items)]
