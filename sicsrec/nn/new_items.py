"""Never-seen items ranked from the interactions that arrived after training.

An item that no training part holds has no fitted row. When the histories being ranked (an
evaluation split's inputs, the catalogue's sequences at predict time) do hold it, they say where
users came to it from. The smoothed first-order chain over those histories' transitions,

    p(j | a) = (T[a, j] + m · π_j) / (T[a, ·] + m)        (T: counts of a → b; π_j: share of
                                                            transitions into j; m: a prior weight)

gives such an item j a probability after the user's last item a, and the model's softmax keeps
1 − Σ_j p(j | a) for every other item, so the two are on one scale. ``m`` is the weight under which
the chain best predicts each of those transitions from the others (leave-one-out likelihood).
These are co-visitation counts, not weights: nothing is trained and no target is read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

PRIOR_WEIGHTS = tuple(round(10 ** (k / 4)) for k in range(17))  # 1 … 10,000, four steps a decade


def transition_counts(histories: Sequence[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct transitions ``a → b`` (consecutive items, padding 0 aside) and their counts."""
    pairs = [(h[:-1], h[1:]) for h in histories if len(h) > 1]
    if not pairs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    a, b = (np.concatenate(p).astype(np.int64) for p in zip(*pairs))
    real = (a > 0) & (b > 0)
    keys, counts = np.unique(a[real] * size + b[real], return_counts=True)
    return keys // size, keys % size, counts


def prior_weight(a: np.ndarray, b: np.ndarray, counts: np.ndarray, size: int) -> float:
    """The ``m`` of :data:`PRIOR_WEIGHTS` under which the chain predicts each transition best from
    all the others: small when a row's own counts are reliable, large when they are noise."""
    if len(counts) == 0:
        return float(PRIOR_WEIGHTS[-1])
    c = counts.astype(np.float64)
    rows = np.bincount(a, weights=c, minlength=size)[a]
    popularity = (np.bincount(b, weights=c, minlength=size) / c.sum())[b]
    likelihood = [float((c * np.log((c - 1 + m * popularity) / (rows - 1 + m))).sum()) for m in PRIOR_WEIGHTS]
    return float(PRIOR_WEIGHTS[int(np.argmax(likelihood))])


class NewItemChain:
    """Scores of the never-seen items that the histories lead to, from their transitions (see the
    module docstring); every other item keeps the model's score."""

    def __init__(self, histories: Sequence[np.ndarray], seen: torch.Tensor):
        size = len(seen)
        a, b, counts = transition_counts(histories, size)
        self.weight = prior_weight(a, b, counts, size)
        c = counts.astype(np.float64)
        inflow = np.bincount(b, weights=c, minlength=size)
        new = (~seen.cpu().numpy()) & (inflow > 0)
        new[0] = False
        self.items = torch.from_numpy(np.flatnonzero(new))  # the items it scores
        column = np.full(size, -1)
        column[self.items.numpy()] = np.arange(len(self.items))
        into_new = column[b] >= 0
        flow = np.zeros((size, len(self.items)), dtype=np.float32)
        np.add.at(flow, (a[into_new], column[b[into_new]]), c[into_new])
        self.flow = torch.from_numpy(flow)  # T[:, items]
        self.out = torch.from_numpy(np.bincount(a, weights=c, minlength=size).astype(np.float32))  # T[a, ·]
        total = max(float(c.sum()), 1.0)
        self.popularity = torch.from_numpy((inflow[self.items.numpy()] / total).astype(np.float32))  # π_j

    def to(self, device: torch.device | str) -> NewItemChain:
        for name in ("items", "flow", "out", "popularity"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def probabilities(self, last: torch.Tensor) -> torch.Tensor:
        """p(j | last item) for the chain's items j: (B, len(items))."""
        m = self.weight
        return (self.flow[last] + m * self.popularity) / (self.out[last].unsqueeze(1) + m)

    def __call__(self, scores: torch.Tensor, last: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """``scores`` (B, items + 1) with the chain's items replaced: log p(j | last item) on the
        scale of the model's log-softmax over the other items, which keep 1 − Σ_j p(j | last).
        ``scale`` multiplies the chain's probabilities (their sum capped at 0.95): a benchmark's
        calibration, not the model's (``benchmarks/cold_scoring.py``)."""
        if len(self.items) == 0:
            return scores
        p = self.probabilities(last)
        if scale != 1.0:
            total = p.sum(1, keepdim=True)
            p = p * (scale * total).clamp(max=0.95) / total
        others = scores.float().index_fill(1, self.items, float("-inf")).logsumexp(-1, keepdim=True)
        kept = (1 - p.sum(1, keepdim=True)).clamp_min(1e-6)
        return scores.index_copy(1, self.items, (others + p.log() - kept.log()).to(scores.dtype))
