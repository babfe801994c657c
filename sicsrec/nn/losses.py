"""Losses and scoring shared by every stage."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Scoring = Literal["dot", "cosine"]


def item_scores(user: torch.Tensor, items: torch.Tensor, scoring: Scoring = "dot",
                temperature: float = 1.0) -> torch.Tensor:
    """Scores of users (N, H) against the item table (I, H): the one scoring used in training and
    inference. Column 0 (padding) is -inf so it is neither predicted nor ranked."""
    if scoring == "cosine":
        user, items = F.normalize(user, dim=-1), F.normalize(items, dim=-1)
        scores = user @ items.T / temperature
    else:
        scores = user @ items.T
    scores[:, 0] = float("-inf")
    return scores


def full_softmax_ce(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over all items; targets are item ids (never 0)."""
    return F.cross_entropy(scores, targets)
