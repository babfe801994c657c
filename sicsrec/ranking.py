"""Exact target ranks over all items → HR@K, NDCG@K, MRR: plain torch, no Lightning, so the GPU
benchmark can use it where only torch is installed.

Ranks are exact and pessimistic on ties: an item scoring the same as the target counts as
ranked above it, so a model that scores everything equal gets no credit. Padding (item 0)
is never ranked.
"""

from __future__ import annotations

from typing import Literal

import torch

Protocol = Literal["recbole", "ninerec"]
PROTOCOLS: tuple[str, ...] = ("recbole", "ninerec")  # history not masked / masked
DEFAULT_KS = (5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
    """0-based rank of each row's target among all items (column 0 = padding, excluded).

    ``history`` (B, H) holds item ids to mask (0 = padding); the target itself is never masked.
    """
    scores = scores.float().clone()
    scores[:, 0] = float("-inf")
    if history is not None:
        masked = history.clone()
        masked[masked == targets[:, None]] = 0
        scores.scatter_(1, masked, float("-inf"))
        scores[:, 0] = float("-inf")
    target_score = scores.gather(1, targets[:, None])
    higher = (scores > target_score).sum(1)
    ties = (scores == target_score).sum(1) - 1
    return higher + ties


def masked_ranks(
    scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor, ranks: torch.Tensor
) -> torch.Tensor:
    """``target_ranks(scores, targets, history)`` from the unmasked ``ranks`` of the same rows, without
    ranking again: each history item (once, not padding, not the target) that scores at or above the
    target was counted once in ``ranks`` and is taken out (a target at -inf ties with masked items:
    nothing to take out)."""
    items = history.clone()
    items[items == targets[:, None]] = 0
    items = items.sort(dim=1).values
    counted = items != 0
    counted[:, 1:] &= items[:, 1:] != items[:, :-1]  # an item twice in a history is masked once
    target_score = scores.gather(1, targets[:, None]).float()
    above = (scores.gather(1, items).float() >= target_score) & counted & (target_score > float("-inf"))
    return ranks - above.sum(1)


def metrics_from_ranks(ranks: torch.Tensor, ks=DEFAULT_KS) -> dict[str, float]:
    ranks = ranks.double()
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks)).mean().item()
    out["mrr"] = (1.0 / (ranks + 1.0)).mean().item()
    return out


def top_items(
    scores: torch.Tensor, history: torch.Tensor, k: int, exclude_seen: bool = True
) -> list[tuple[list[int], list[float]]]:
    """Each row's ``k`` best items (ids, scores), best first: padding never, the history's items not
    when ``exclude_seen`` — what ``predict`` and ``recommend`` return."""
    scores = scores.float().clone()
    scores[:, 0] = float("-inf")
    if exclude_seen:
        scores.scatter_(1, history, float("-inf"))
    top = torch.topk(scores, min(k, scores.shape[1] - 1), dim=1)
    rows = []
    for items, values in zip(top.indices.tolist(), top.values.tolist()):
        keep = [(i, v) for i, v in zip(items, values) if v != float("-inf")]
        rows.append(([i for i, _ in keep], [v for _, v in keep]))
    return rows
