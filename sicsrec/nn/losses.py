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


def info_nce(a: torch.Tensor, b: torch.Tensor, a_ids: torch.Tensor, b_ids: torch.Tensor,
             temperature: float, symmetric: bool = True) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of ``a`` matches row i of ``b``.

    Inputs are L2-normalised embeddings. A column that holds the same item as the positive
    (``b_ids[j] == b_ids[i]``, j ≠ i) is masked out of the negatives, not merely zeroed: a batch
    with the same item twice must not push an item away from itself.
    """
    logits = a @ b.T / temperature
    same = b_ids[None, :] == b_ids[:, None]
    eye = torch.eye(len(b_ids), dtype=torch.bool, device=logits.device)
    loss = F.cross_entropy(logits.masked_fill(same & ~eye, float("-inf")), torch.arange(len(a), device=a.device))
    if not symmetric:
        return loss
    same_a = a_ids[None, :] == a_ids[:, None]
    back = F.cross_entropy(logits.T.masked_fill(same_a & ~eye, float("-inf")), torch.arange(len(a), device=a.device))
    return (loss + back) / 2


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank (rank order); gradients flow back to each rank's own part.
    Without an initialised process group this is the identity."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def content_contrastive(user: torch.Tensor, target_content: torch.Tensor, targets: torch.Tensor,
                        temperature: float) -> torch.Tensor:
    """Content-aware contrastive loss: pull each user vector towards the content vector of its
    true next item, away from the content vectors of the other targets in the batch — gathered
    across all devices under DDP. Targets equal to the positive are masked out of the negatives."""
    user = F.normalize(user, dim=-1)
    negatives = gather_with_grad(F.normalize(target_content, dim=-1))
    negative_ids = gather_with_grad(targets)
    import torch.distributed as dist

    offset = dist.get_rank() * len(user) if dist.is_available() and dist.is_initialized() else 0
    positive = torch.arange(len(user), device=user.device) + offset
    logits = user @ negatives.T / temperature
    duplicate = (negative_ids[None, :] == targets[:, None])
    duplicate[torch.arange(len(user)), positive] = False
    return F.cross_entropy(logits.masked_fill(duplicate, float("-inf")), positive)
