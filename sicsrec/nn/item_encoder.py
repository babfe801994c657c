"""What an item's content adds to its ID row: a learned map of its cached content features."""

from __future__ import annotations

import torch
from torch import nn

from sicsrec.nn.content_encoder import ModalityProjection


class ContentMap(nn.Module):
    """Each modality's features standardised over the catalogue's items that have them, then
    in → in/2 → ReLU → hidden; the modalities an item has are summed (a missing one adds nothing,
    never a zero or a mean vector standing in for it). Row 0 (padding) is zero.

    Why standardise: raw MiniLM features vary by about 0.04 a dimension, so an MLP on them starts
    out ignoring the content and learns it slowly; standardised, the content carries weight from
    the first step. The statistics are the catalogue's own, computed from the features given (no
    state: a grown catalogue is standardised over itself).
    """

    def __init__(self, feature_dims: dict[str, int], hidden_size: int):
        super().__init__()
        if not feature_dims:
            raise ValueError("the content map needs at least one modality's features")
        self.projections = nn.ModuleDict({m: ModalityProjection(d, hidden_size) for m, d in feature_dims.items()})

    def forward(self, features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for m, proj in self.projections.items():
            x, present = features[m], masks[m].clone()
            present[0] = False
            v = torch.zeros(len(x), proj.net[-1].out_features, dtype=x.dtype, device=x.device)
            if present.sum() > 1:
                rows = x[present]
                v = proj((x - rows.mean(0)) / rows.std(0).clamp_min(1e-6)) * present.unsqueeze(-1).to(x.dtype)
            total = v if total is None else total + v
        return total
