"""Full-ranking evaluation: exact target ranks over all items → HR@K, NDCG@K, MRR.

Ranks are exact and pessimistic on ties: an item scoring the same as the target counts as
ranked above it, so a model that scores everything equal gets no credit. Padding (item 0)
is never ranked. Each user is counted once, also under DDP where samplers repeat samples.
"""

from __future__ import annotations

from typing import Literal

import torch
from torchmetrics import Metric

Protocol = Literal["recbole", "ninerec"]
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


def metrics_from_ranks(ranks: torch.Tensor, ks=DEFAULT_KS) -> dict[str, float]:
    ranks = ranks.double()
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks)).mean().item()
    out["mrr"] = (1.0 / (ranks + 1.0)).mean().item()
    return out


class RankingMetrics(Metric):
    """Collects (user, rank) pairs; ``compute`` keeps one rank per user and averages.

    A user seen twice (a DDP sampler pads by repeating samples) has the same rank both times,
    so de-duplicating by user makes the result equal to one device's.
    """

    full_state_update = False

    def __init__(self, ks=DEFAULT_KS, protocol: Protocol = "recbole"):
        super().__init__()
        self.ks, self.protocol = tuple(ks), protocol
        self.add_state("users", default=[], dist_reduce_fx="cat")
        self.add_state("ranks", default=[], dist_reduce_fx="cat")

    def update(self, users: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor,
               history: torch.Tensor | None = None) -> None:
        mask = history if self.protocol == "ninerec" else None
        self.users.append(users)
        self.ranks.append(target_ranks(scores, targets, mask))

    def unique_ranks(self) -> torch.Tensor:
        users = torch.cat(self.users) if isinstance(self.users, list) else self.users
        ranks = torch.cat(self.ranks) if isinstance(self.ranks, list) else self.ranks
        order = torch.argsort(users, stable=True)
        users, ranks = users[order], ranks[order]
        first = torch.ones_like(users, dtype=torch.bool)
        first[1:] = users[1:] != users[:-1]
        return ranks[first]

    def compute(self) -> dict[str, float]:
        ranks = self.unique_ranks()
        return {**metrics_from_ranks(ranks, self.ks), "users": float(ranks.numel())}


@torch.inference_mode()
def evaluate(score_fn, loader, protocol: Protocol = "recbole", ks=DEFAULT_KS) -> dict[str, float]:
    """Metrics of ``score_fn(batch) -> (B, num_items + 1)`` over an evaluation loader."""
    metric = RankingMetrics(ks, protocol)
    for batch in loader:
        metric.update(batch["user"], score_fn(batch), batch["target"], batch["history"])
    return metric.compute()


def popularity_scorer(item_counts: torch.Tensor):
    """The most-popular baseline: every user gets the training interaction counts as scores."""
    counts = item_counts.float()
    return lambda batch: counts.expand(batch["target"].shape[0], -1)
