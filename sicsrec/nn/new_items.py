"""Never-seen items ranked from the interactions that arrived after training.

An item that no training part holds has no fitted row. Where the last step of the histories being
ranked leads to it (on the standard split: other users' validation items), :func:`fold_in` fits
its row there, by the model's own softmax and with every other row fixed — the fold-in of a new
item in matrix factorisation — pulled towards the row it starts from (borrowed through its
content) by a weight that cross-validation over those transitions chooses. The fitted row is an
item vector like any other, on the model's scale, and a user whose state resembles the states of
those who just moved to the item ranks it high. When the histories being ranked (an
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

from sicsrec.nn.losses import Scoring, item_scores

PRIOR_WEIGHTS = tuple(round(10 ** (k / 4)) for k in range(17))  # 1 … 10,000, four steps a decade
FOLD_IN_WEIGHTS = (1000.0, 300.0, 100.0, 30.0, 10.0, 3.0)  # strongest first: each fit starts from the last


def fold_in(
    users: torch.Tensor,
    targets: torch.Tensor,
    table: torch.Tensor,
    items: torch.Tensor,
    scoring: tuple[Scoring, float] = ("dot", 1.0),
    weight: float | None = None,
    folds: int = 5,
    chunk: int = 4096,
) -> tuple[torch.Tensor, float]:
    """Rows for ``items`` that make the model predict the transitions ``users[n] → targets[n]``
    best, every other row of ``table`` fixed: the negative log-likelihood of the full softmax plus
    ``weight / 2 · |row − table[item]|²``. Transitions into other items count too: they are the
    evidence that their users did not move to ``items``. ``weight`` None: the one of
    :data:`FOLD_IN_WEIGHTS` with the best held-out likelihood in ``folds``-fold cross-validation
    over the transitions (seeded, so the same inputs give the same rows). Returns (rows, weight)."""
    with torch.no_grad():
        users, items = users.float(), items.to(table.device)
        others = torch.ones(len(table), dtype=torch.bool, device=table.device)
        others[items] = False
        column = torch.full((len(table),), -1, dtype=torch.long, device=table.device)
        column[items] = torch.arange(len(items), device=table.device)
        rest, fixed = [], []  # per transition: log Σ exp over the fixed items; the target's fixed score
        for start in range(0, len(users), chunk):
            scores = item_scores(users[start : start + chunk], table, *scoring)
            fixed.append(scores.gather(1, targets[start : start + chunk, None]).squeeze(1))
            rest.append(scores[:, others].logsumexp(-1))
        rest, fixed, into = torch.cat(rest), torch.cat(fixed), column[targets]
        start_rows = table[items].float()
    padding = table[:1].float()

    def subset(n: torch.Tensor) -> tuple[torch.Tensor, ...]:  # indexed once per fit, not per L-BFGS step
        return users[n], into[n], fixed[n], rest[n]

    def loss(rows: torch.Tensor, part: tuple[torch.Tensor, ...]) -> torch.Tensor:
        u, to, fixed_target, rest_lse = part
        new = item_scores(u, torch.cat([padding, rows]), *scoring)[:, 1:]
        target = torch.where(to >= 0, new.gather(1, to.clamp(min=0)[:, None]).squeeze(1), fixed_target)
        return (torch.logaddexp(rest_lse, new.logsumexp(-1)) - target).sum()

    def fit(w: float, n: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        rows, part = start.clone().requires_grad_(True), subset(n)
        optimiser = torch.optim.LBFGS([rows], max_iter=50, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimiser.zero_grad()
            value = loss(rows, part) + w / 2 * (rows - start_rows).pow(2).sum()
            value.backward()
            return value

        optimiser.step(closure)
        return rows.detach()

    everyone = torch.arange(len(users), device=users.device)
    with torch.inference_mode(False), torch.enable_grad():  # evaluation loops run in inference mode
        users, rest, fixed, into, start_rows, padding = (
            t.clone() for t in (users, rest, fixed, into, start_rows, padding)
        )
        if weight is None:
            fold = torch.randperm(len(users), generator=torch.Generator().manual_seed(0)).to(users.device) % folds
            held_out = dict.fromkeys(FOLD_IN_WEIGHTS, 0.0)
            for k in range(folds):
                rows = start_rows
                for w in FOLD_IN_WEIGHTS:
                    rows = fit(w, everyone[fold != k], rows)
                    held_out[w] += float(loss(rows, subset(everyone[fold == k])))
            weight = min(held_out, key=held_out.get)
        rows = fit(weight, everyone, start_rows)
    return rows.to(table.dtype), float(weight)


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
