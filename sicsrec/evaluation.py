"""Full-ranking evaluation over a loader or across devices (the rank arithmetic is in
``sicsrec.ranking``). Each user is counted once, also under DDP where samplers repeat samples.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from sicsrec.ranking import DEFAULT_KS, Protocol, metrics_from_ranks, target_ranks

__all__ = [
    "DEFAULT_KS",
    "Protocol",
    "RankingMetrics",
    "evaluate",
    "last_item_scorer",
    "metrics_from_ranks",
    "popularity_scorer",
    "target_ranks",
]


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

    def update(
        self, users: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor | None = None
    ) -> None:
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


def last_item_scorer(transitions: torch.Tensor, item_counts: torch.Tensor):
    """The last-item baseline: how often each item followed the user's last item in training
    (``transitions[a, b]``), ties broken by popularity. A model that only looks at the last item
    can do no better than this on data whose signal is first-order."""
    tie_break = item_counts.float() / (item_counts.max().float() + 1.0)

    def score(batch):
        inputs = batch["input"]
        last = inputs[torch.arange(len(inputs)), (inputs > 0).sum(1).clamp(min=1) - 1]
        return transitions[last] + tie_break

    return score
