"""Exact full ranking against a brute-force reference, with ties and history masking."""

import math

import pytest
import torch

from sicsrec.evaluation import RankingMetrics, metrics_from_ranks, target_ranks


def brute_force_rank(scores, target, history=()):
    masked = {h for h in history if h != target and h != 0}
    t = scores[target]
    rank = 0
    for item in range(1, len(scores)):
        if item == target or item in masked:
            continue
        if scores[item] >= t:  # ties count against the target (pessimistic)
            rank += 1
    return rank


def test_ranks_match_brute_force_with_ties_and_masking():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n_users, n_items = 16, 30
        scores = torch.randint(0, 6, (n_users, n_items + 1), generator=g).float()  # many ties
        targets = torch.randint(1, n_items + 1, (n_users,), generator=g)
        history = torch.randint(0, n_items + 1, (n_users, 7), generator=g)
        history[:3, 0] = targets[:3]  # a target in its own history is never masked
        plain = target_ranks(scores, targets)
        masked = target_ranks(scores, targets, history)
        for u in range(n_users):
            s = scores[u].tolist()
            assert plain[u].item() == brute_force_rank(s, targets[u].item())
            assert masked[u].item() == brute_force_rank(s, targets[u].item(), history[u].tolist())


def test_padding_is_never_ranked_and_equal_scores_get_no_credit():
    scores = torch.zeros(1, 11)
    scores[0, 0] = 100.0  # padding scored high: ignored
    ranks = target_ranks(scores, torch.tensor([4]))
    assert ranks.item() == 9  # all 10 real items tie: pessimistic rank is the last


def test_metric_formulas():
    ranks = torch.tensor([0, 3, 9, 10, 40])
    m = metrics_from_ranks(ranks, ks=(5, 10))
    assert math.isclose(m["hr@5"], 2 / 5)
    assert math.isclose(m["hr@10"], 3 / 5)
    assert math.isclose(m["ndcg@10"], (1 + 1 / math.log2(5) + 1 / math.log2(11)) / 5)
    assert math.isclose(m["mrr"], sum(1 / (r + 1) for r in [0, 3, 9, 10, 40]) / 5)


def test_each_user_is_counted_once():
    """A DDP sampler repeats samples to even out ranks: a repeated user must not count twice."""
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(6, 21, generator=g)
    targets = torch.randint(1, 21, (6,), generator=g)
    users = torch.arange(6)
    once = RankingMetrics()
    once.update(users, scores, targets)
    padded = RankingMetrics()
    padded.update(users[:4], scores[:4], targets[:4])
    padded.update(users[2:], scores[2:], targets[2:])
    padded.update(users[:1], scores[:1], targets[:1])
    assert once.compute() == padded.compute()
    assert padded.compute()["users"] == 6


def test_protocol_decides_masking():
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0]])
    targets, history = torch.tensor([3]), torch.tensor([[1, 2]])
    recbole, ninerec = RankingMetrics(ks=(1,), protocol="recbole"), RankingMetrics(ks=(1,), protocol="ninerec")
    for m in (recbole, ninerec):
        m.update(torch.tensor([0]), scores, targets, history)
    assert recbole.compute()["hr@1"] == 0.0 and ninerec.compute()["hr@1"] == 1.0
    # the other protocol is reported beside the headline, under its name
    assert recbole.compute()["ninerec/hr@1"] == 1.0 and ninerec.compute()["recbole/hr@1"] == 0.0
    assert "recbole/hr@1" not in recbole.compute() and "ninerec/hr@1" not in ninerec.compute()


def test_the_metrics_table_shows_the_other_protocol_apart_from_the_headline():
    from sicsrec.cli import format_metrics_table
    from sicsrec.report import _views

    metrics = RankingMetrics(ks=(10,), protocol="ninerec")
    g = torch.Generator().manual_seed(0)
    metrics.update(
        torch.arange(50),
        torch.randn(50, 30, generator=g),
        torch.randint(1, 30, (50,), generator=g),
        torch.randint(0, 30, (50, 5), generator=g),
    )
    logged = {f"test/{k}": v for k, v in metrics.compute().items() if k != "users"}
    table = format_metrics_table(logged)
    assert f"recbole protocol (history not masked): {100 * logged['test/recbole/hr@10']:.2f}" in table
    assert "recbole HR" not in table  # not a view of its own
    assert _views(logged) == [""]


def test_warm_and_cold_buckets_split_the_users_by_their_targets_training_occurrences():
    g = torch.Generator().manual_seed(1)
    n = 200
    scores = torch.randn(n, 41, generator=g)
    targets = torch.randint(1, 41, (n,), generator=g)
    occurrences = torch.randint(0, 9, (n,), generator=g)
    users = torch.arange(n)
    metric = RankingMetrics()
    metric.update(users[:120], scores[:120], targets[:120], None, occurrences[:120])
    metric.update(users[100:], scores[100:], targets[100:], None, occurrences[100:])  # 20 users seen twice
    out = metric.compute()
    assert out["cold/users"] + out["rare/users"] + out["warm/users"] == out["users"] == n
    ranks = target_ranks(scores, targets)
    for name, (low, high) in (("cold", (0, 0)), ("rare", (1, 4)), ("warm", (5, 8))):
        inside = (occurrences >= low) & (occurrences <= high)
        assert out[f"{name}/users"] == int(inside.sum())
        assert out[f"{name}/hr@10"] == (ranks[inside] < 10).double().mean().item()
    # the user-weighted mean of the buckets is the whole
    assert sum(out[f"{b}/hr@10"] * out[f"{b}/users"] for b in ("cold", "rare", "warm")) / n == pytest.approx(
        out["hr@10"]
    )
    without = RankingMetrics()
    without.update(users, scores, targets)
    # no occurrences given: no buckets (only the other protocol's metrics have a prefix)
    assert not any("/" in k and not k.startswith("ninerec/") for k in without.compute())


def test_last_item_baseline_reads_each_rows_last_real_item_of_right_padded_inputs():
    from sicsrec.evaluation import last_item_scorer

    # item 2 is followed by 3 in training, item 4 by 1; counts break ties
    transitions = torch.zeros(6, 6)
    transitions[2, 3] = transitions[4, 1] = 5.0
    score = last_item_scorer(transitions, torch.tensor([0, 1, 2, 3, 4, 5]))
    inputs = torch.tensor([[1, 2, 0, 0], [3, 2, 4, 0], [0, 0, 0, 0]])  # the last row is empty
    top = score({"input": inputs}).argmax(1)
    assert top.tolist() == [3, 1, 5]  # after 2 → 3; after 4 → 1; no history → the most popular item


def test_masked_ranks_from_the_unmasked_ones_equal_ranking_with_the_history_masked():
    """Ties (integer scores), repeated history items, padding and the target inside the history."""
    from sicsrec.ranking import masked_ranks

    g = torch.Generator().manual_seed(7)
    scores = torch.randint(0, 6, (300, 25), generator=g).float()
    targets = torch.randint(1, 25, (300,), generator=g)
    history = torch.randint(0, 25, (300, 9), generator=g)
    history[::5, 0] = targets[::5]  # the target itself in some histories: never masked
    history[::3, 1] = history[::3, 2]  # an item twice
    scores[::11, :] = float("-inf")  # rows where the target and everything else score -inf
    scores[::13, targets[::13]] = float("inf")
    unmasked = target_ranks(scores, targets)
    assert torch.equal(masked_ranks(scores, targets, history, unmasked), target_ranks(scores, targets, history))
    assert (masked_ranks(scores, targets, history, unmasked) < unmasked).any()  # the history did move ranks
