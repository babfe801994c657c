"""Full-ranking evaluation over a loader or across devices (the rank arithmetic is in
``sicsrec.ranking``). Each user is counted once, also under DDP where samplers repeat samples.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from sicsrec.nn.attention import last_items
from sicsrec.ranking import DEFAULT_KS, PROTOCOLS, Protocol, masked_ranks, metrics_from_ranks, target_ranks

__all__ = [
    "DEFAULT_KS",
    "PROTOCOLS",
    "Protocol",
    "RankingMetrics",
    "evaluate",
    "last_item_scorer",
    "metrics_from_ranks",
    "popularity_scorer",
    "target_ranks",
]


# Targets by their number of occurrences in all users' training parts: an ID model can only score
# an item it has seen, and leave-one-out test targets are colder than validation targets.
TARGET_BUCKETS = {"cold": (0, 0), "rare": (1, 4), "warm": (5, None)}
# Under the cold-start protocol (``cold_items``): users whose target is a held-out item, and the rest.
HELD_OUT_GROUPS = ("held_out", "rest")
# On a catalogue with covers: users whose target has none (its image part is masked), and the rest.
COVER_GROUPS = ("no_cover", "cover")


class RankingMetrics(Metric):
    """Collects (user, rank) pairs; ``compute`` keeps one rank per user and averages.

    A user seen twice (a DDP sampler pads by repeating samples) has the same rank both times,
    so de-duplicating by user makes the result equal to one device's. Given each target's training
    occurrences, ``compute`` also reports HR@10, NDCG@10 and the user count per ``TARGET_BUCKETS``
    bucket (``cold/hr@10`` …; an empty bucket reports only ``cold/users = 0``); given which targets
    are held-out items of the cold-start protocol, the same for ``held_out`` and ``rest``; given which
    targets have no cover (on a catalogue with covers), the same for ``no_cover`` and ``cover``.

    ``protocol`` is the headline (``hr@10`` …; what early stopping reads); the other protocol's
    metrics are reported beside it under its name (``recbole/hr@10`` under ``ninerec``), so
    every result says both how the product ranks (history masked) and what RecBole-style papers report.
    """

    full_state_update = False

    def __init__(self, ks=DEFAULT_KS, protocol: Protocol = "recbole"):
        super().__init__()
        self.ks, self.protocol = tuple(ks), protocol
        self.add_state("users", default=[], dist_reduce_fx="cat")
        self.add_state("ranks", default=[], dist_reduce_fx="cat")
        self.add_state("other_ranks", default=[], dist_reduce_fx="cat")  # under the other protocol
        self.add_state("occurrences", default=[], dist_reduce_fx="cat")
        self.add_state("held_out", default=[], dist_reduce_fx="cat")
        self.add_state("no_cover", default=[], dist_reduce_fx="cat")

    def update(
        self,
        users: torch.Tensor,
        scores: torch.Tensor,
        targets: torch.Tensor,
        history: torch.Tensor | None = None,
        occurrences: torch.Tensor | None = None,
        held_out: torch.Tensor | None = None,
        no_cover: torch.Tensor | None = None,
    ) -> None:
        unmasked = target_ranks(scores, targets)
        masked = masked_ranks(scores, targets, history, unmasked) if history is not None else None
        self.users.append(users)
        self.ranks.append(masked if self.protocol == "ninerec" and masked is not None else unmasked)
        self.other_ranks.append(unmasked if self.protocol == "ninerec" or masked is None else masked)
        self.occurrences.append(torch.full_like(users, -1) if occurrences is None else occurrences)
        self.held_out.append(torch.full_like(users, -1) if held_out is None else held_out)
        self.no_cover.append(torch.full_like(users, -1) if no_cover is None else no_cover)

    def update_batch(self, batch: dict, scores: torch.Tensor) -> None:
        """``update`` with an evaluation batch's own fields (``collate_eval``)."""
        given = batch.get("occurrences"), batch.get("held_out"), batch.get("no_cover")
        self.update(batch["user"], scores, batch["target"], batch["history"], *given)

    def unique_ranks(self) -> tuple[torch.Tensor, ...]:
        """Each user's rank once, its target's training occurrences, whether the target is a
        held-out item and whether it has no cover (-1: not given), and its rank under the other protocol."""
        users, ranks, occurrences, held_out, no_cover, other = (
            torch.cat(s) if isinstance(s, list) else s
            for s in (self.users, self.ranks, self.occurrences, self.held_out, self.no_cover, self.other_ranks)
        )
        order = torch.argsort(users, stable=True)
        users = users[order]
        first = torch.ones_like(users, dtype=torch.bool)
        first[1:] = users[1:] != users[:-1]
        return tuple(t[order][first] for t in (ranks, occurrences, held_out, no_cover, other))

    def compute(self) -> dict[str, float]:
        ranks, occurrences, held_out, no_cover, other = self.unique_ranks()
        out = {**metrics_from_ranks(ranks, self.ks), "users": float(ranks.numel())}
        other_protocol = next(p for p in PROTOCOLS if p != self.protocol)
        out.update({f"{other_protocol}/{k}": v for k, v in metrics_from_ranks(other, self.ks).items()})
        groups = {}
        if len(occurrences) and bool((occurrences >= 0).all()):
            for name, (low, high) in TARGET_BUCKETS.items():
                groups[name] = (occurrences >= low) & (occurrences <= (high if high is not None else occurrences.max()))
        if len(held_out) and bool((held_out >= 0).all()):
            groups.update(held_out=held_out == 1, rest=held_out == 0)
        if len(no_cover) and bool((no_cover >= 0).all()):
            groups.update(no_cover=no_cover == 1, cover=no_cover == 0)
        for name, inside in groups.items():
            out[f"{name}/users"] = float(inside.sum())
            if inside.any():
                part = metrics_from_ranks(ranks[inside], (10,))
                out.update({f"{name}/hr@10": part["hr@10"], f"{name}/ndcg@10": part["ndcg@10"]})
        return out


@torch.inference_mode()
def evaluate(score_fn, loader, protocol: Protocol = "recbole", ks=DEFAULT_KS) -> dict[str, float]:
    """Metrics of ``score_fn(batch) -> (B, num_items + 1)`` over an evaluation loader."""
    metric = RankingMetrics(ks, protocol)
    for batch in loader:
        metric.update_batch(batch, score_fn(batch))
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
        last = last_items(inputs)
        return transitions[last] + tie_break

    return score
