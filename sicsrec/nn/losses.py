"""Losses and scoring shared by every stage."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Scoring = Literal["dot", "cosine"]


def item_scores(
    user: torch.Tensor, items: torch.Tensor, scoring: Scoring = "dot", temperature: float = 1.0
) -> torch.Tensor:
    """Scores of users (N, H) against the item table (I, H): the one scoring used in training and
    inference. Column 0 (padding) is -inf so it is neither predicted nor ranked.

    Always in float32, also under ``bf16-mixed``: bfloat16 scores (8 bits of mantissa) tie many
    items, which would change ranks and the softmax over thousands of items."""
    with torch.autocast(user.device.type, enabled=False):
        user, items = user.float(), items.float()
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


def _gathered(x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """``x`` from every rank concatenated in rank order (sizes may differ between ranks), the offset
    of this rank's rows in it, and the world size; gradients flow back to each rank's own rows.
    Without an initialised process group: ``(x, 0, 1)``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0, 1
    from torch.distributed.nn.functional import all_gather

    world, rank = dist.get_world_size(), dist.get_rank()
    size = torch.tensor([len(x)], device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    padded = torch.cat([x, x.new_zeros((max(sizes) - len(x), *x.shape[1:]))])
    parts = all_gather(padded) if x.requires_grad else _all_gather_plain(padded, world)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]), sum(sizes[:rank]), world


def _all_gather_plain(x: torch.Tensor, world: int) -> list[torch.Tensor]:
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return parts


def _contrastive_ce(
    queries: torch.Tensor, keys: torch.Tensor, key_ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Cross-entropy of each local query against the keys of every rank, the positive being the
    key in the query's own row. Keys holding the same id as the positive are masked out of the
    negatives. Normalised by the *global* number of queries (times the world size, which DDP's
    gradient averaging divides out), so losses and gradients equal one process on the global batch."""
    all_keys, offset, world = _gathered(keys)
    all_ids, _, _ = _gathered(key_ids)
    total = len(all_ids)
    positive = torch.arange(len(queries), device=queries.device) + offset
    logits = queries @ all_keys.T / temperature
    duplicate = all_ids[None, :] == key_ids[:, None]
    duplicate[torch.arange(len(queries), device=queries.device), positive] = False
    loss = F.cross_entropy(logits.masked_fill(duplicate, float("-inf")), positive, reduction="sum")
    return loss * world / max(total, 1)


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    a_ids: torch.Tensor,
    b_ids: torch.Tensor,
    temperature: float,
    symmetric: bool = True,
) -> torch.Tensor:
    """InfoNCE with in-batch negatives (gathered across ranks under DDP): row i of ``a`` matches
    row i of ``b``.

    Inputs are L2-normalised embeddings. A column that holds the same item as the positive
    (``b_ids[j] == b_ids[i]``, j ≠ i) is masked out of the negatives, not merely zeroed: a batch
    with the same item twice must not push an item away from itself.
    """
    loss = _contrastive_ce(a, b, b_ids, temperature)
    if not symmetric:
        return loss
    return (loss + _contrastive_ce(b, a, a_ids, temperature)) / 2


def content_contrastive(
    user: torch.Tensor, target_content: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Content-aware contrastive loss: pull each user vector towards the content vector of its
    true next item, away from the content vectors of the other targets in the batch — gathered
    across all devices under DDP. Targets equal to the positive are masked out of the negatives."""
    return _contrastive_ce(F.normalize(user, dim=-1), F.normalize(target_content, dim=-1), targets, temperature)
