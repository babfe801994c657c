"""How a trained stage-2 run would rank never-seen items under other scorings (no retraining).

    .venv/bin/python benchmarks/cold_scoring.py runs/bili_food/stage2/seed2024

An item that occurs in no user's training part has an ID row training never fitted. The shipped
model lets it borrow the content-weighted mean of its ``cold_neighbours`` nearest seen items' rows
(``mean k τ``). This script scores the same checkpoint's users against other choices for those
items only — the mean over k neighbours at temperature τ, or the best score among its k nearest
seen neighbours minus a margin δ (``max k -δ``), or a mixture that gives new items a share of the
probability (``p(new j) = share · softmax(title similarity to the last item / τ)`` over the new
items, the model's softmax times ``1 - share`` over the seen ones; τ fitted by likelihood on the
training transitions, the share the validation targets' or fixed), or a slot policy (``slots s``:
the model's top 10 - s seen items, then the new items most similar to the last item, above a
floor), or fresh evidence (``fresh``: the same mixture, but q(j) ∝ n_j · exp(title similarity to
the last item / τ) over the new items that occur n_j > 0 times in the split's own inputs — the
interactions that arrived after training, which a deployed model sees without retraining — with
the share the new items' share of the inputs' last items, or twice it; τ fitted on the training
transitions with the popularity term; ``fresh popularity``: n_j alone; ``fresh slot``: one slot,
new items by n_j · exp(similarity / τ)), or the chain (``new_item_chain``, its prior weight fitted
or given; :mod:`sicsrec.nn.new_items`; the never-seen items it does not score keep the
checkpoint's borrowed rows, as under ``sicsrec test``), or what the model ships
(``new_item_fold_in``: rows fitted to the inputs' last step, the chain for the never-seen items
only earlier steps lead to; exactly ``sicsrec test``'s scoring), or the same with the fold-in's
weight λ given (``new_item_fold_in, λ = w``) instead of cross-validated — and prints, for
validation and test, under the ``recbole`` and ``ninerec`` protocols: HR@10 / NDCG@10, HR@10 on
targets that occur in no training part (cold) and on the others (rest); under the cold-start
protocol (``cold_items``) on the held-out items' targets and the rest instead. Seen items keep
their scores in every row but the slots'. Nothing reads a test target but the line that says so;
the chain's rows ``× g`` multiply its probabilities by g, fitted one step back (validation targets
against the training parts, standard split; see ``one_step_back_factor``) or given.
"""

from __future__ import annotations

import argparse
import copy
import math
import re

import numpy as np
import torch
import torch.nn.functional as F

from sicsrec.evaluation import metrics_from_ranks, target_ranks
from sicsrec.nn.attention import last_items
from sicsrec.nn.losses import item_scores
from sicsrec.nn.new_items import FOLD_IN_WEIGHTS, NewItemChain
from sicsrec.serving import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a stage-2 run folder (its config.yaml and best checkpoint)")
    parser.add_argument("--ckpt_path", default=None)
    parser.add_argument("--only", default="", help="score only the choices whose name matches this regular expression")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, dm, _ = load_model(args.run, args.ckpt_path)  # each row below binds what it scores with
    shipped = (model.network.cold_neighbours, model.network.neighbour_temperature)  # the checkpoint's borrowing
    model.network.cold_neighbours = 0  # the items' own rows: every scoring below replaces them
    model.bind_histories(None)  # no new_item_chain but where a row below asks for it
    dm.setup("test")
    seen = model.seen_items.clone()
    seen[0] = False
    with torch.no_grad():
        content = model.content_table(model.network.content_encoder)
        table = model.network.item_table(content, model.id_items(model.network.id_encoder), model.seen_items)
        unit = F.normalize(content, dim=-1)
        new, old = (~seen).nonzero().squeeze(1), seen.nonzero().squeeze(1)
        new = new[new > 0]
        cosines, nearest = (unit[new] @ unit[old].T).topk(20, dim=1)
        loaders = {"valid": dm.val_dataloader(), "test": dm.test_dataloader()}
        splits = {
            split: [
                (model.user_vectors(b), b["target"], b["history"], last_items(b["input"]), b.get("held_out"))
                for b in loader
            ]
            for split, loader in loaders.items()
        }
        titles = F.normalize(dm.item_features()[0]["text"].float(), dim=-1)
        similarity = titles @ titles.T  # raw title features, as benchmarks/title_similarity.py
        similarity[0] = similarity[:, 0] = float("-inf")
        transitions = dm.train_transition_counts()
        tau_t = fitted_temperature(similarity, transitions, seen)
        tau_f = fitted_temperature(similarity, transitions, seen, log_prior=transitions.sum(0).clamp(min=1).log())
        valid_targets = torch.cat([t for _, t, *_ in splits["valid"]])
        valid_new = float((~model.seen_items[valid_targets]).float().mean())
        print(f"title temperature fitted on training transitions: {tau_t} (with popularity: {tau_f})")
        print(f"new targets in validation: {valid_new:.4f}")
        fresh_counts, fresh_share, chains = {}, {}, {}  # per split, from its inputs only
        for split, batches in splits.items():
            histories = dm.split_histories(split)  # one source for the counts and the chain
            counts = torch.bincount(torch.from_numpy(np.concatenate(histories)), minlength=len(seen))
            fresh_counts[split] = counts.float()[new]
            chains[split] = NewItemChain(histories, model.seen_items)
            lasts = torch.cat([last for _, _, _, last, _ in batches])
            fresh_share[split] = float((~model.seen_items[lasts]).float().mean())
            occurring = int((fresh_counts[split] > 0).sum())
            share = fresh_share[split]
            print(f"{split}: {occurring} of {len(new)} new items in its inputs; new among last inputs {share:.4f}")

        def mean_rows(k: int, tau: float):  # the model's own borrowing, with other k and τ
            model.network.cold_neighbours, model.network.neighbour_temperature = k, tau
            rows = model.network.borrowed_rows(table, content, model.seen_items)[new]
            return lambda users, scores, last, mask, split: item_scores(users, rows, *model.scoring())

        def best_neighbour(k: int, margin: float):
            return lambda users, scores, last, mask, split: scores[:, old[nearest[:, :k]]].amax(-1) - margin

        def new_item_similarity(last):  # (B, new items): title similarity to the last item, never itself
            sim = similarity[last][:, new].clone()
            sim[new.unsqueeze(0) == last.unsqueeze(1)] = float("-inf")
            return sim

        def mixture(share: float):  # p(new j) = share · q(j), p(seen i) = (1 - share) · softmax(scores)_i
            def score(users, scores, last, mask, split):
                q = (new_item_similarity(last) / tau_t).log_softmax(-1)
                return mixed(scores, share, q)

            return score

        def mixed(scores, share, log_q):
            normaliser = scores[:, old].logsumexp(-1, keepdim=True)
            return normaliser + math.log(share / (1 - share)) + log_q

        def fresh_evidence(last, split, with_titles: bool = True):  # log(n_j · exp(sim / τ)); -inf where n_j = 0
            log_n = fresh_counts[split].log().expand(len(last), -1)
            return log_n + new_item_similarity(last) / tau_f if with_titles else log_n.clone()

        def fresh(times: float, with_titles: bool = True):  # q(j) ∝ n_j · exp(sim / τ) over new items in the inputs
            def score(users, scores, last, mask, split):
                q = fresh_evidence(last, split, with_titles)
                if not torch.isfinite(q).any():  # no new item in this split's inputs: the mixture has nothing to add
                    return torch.full_like(q, float("-inf"))
                share = min(0.5, times * fresh_share[split])
                return mixed(scores, share, q.log_softmax(-1))

            return score

        borrowed = mean_rows(*shipped) if shipped[0] > 0 else None  # the checkpoint's own borrowing

        def with_chain(weight: float | None, scale: float = 1.0):
            """The shipped new_item_chain, its prior weight fitted or given, its probabilities times
            ``scale``; the never-seen items outside it keep their borrowed rows."""

            def score(users, scores, last, mask, split):
                chain = copy.copy(chains[split])
                chain.weight = chain.weight if weight is None else weight
                if borrowed is not None:
                    scores[:, new] = borrowed(users, scores, last, mask, split)
                return chain(scores, last, scale)[:, new]

            return score

        def slots(count: int, floor: float, by_fresh: bool = False):  # the model's top 10 - count seen items, then
            def score(users, scores, last, mask, split):  # new items by similarity (or by fresh evidence)
                sim = new_item_similarity(last)
                order = fresh_evidence(last, split) if by_fresh else sim
                ranked = scores if mask is None else scores.scatter(1, mask, float("-inf"))  # what the protocol ranks
                top = ranked[:, old].topk(10 - count, dim=-1).indices
                scores[torch.arange(len(scores)).unsqueeze(1), old[top]] += 1e4  # in place: above every new item
                shown = (sim >= floor) & torch.isfinite(order)
                return torch.where(shown, 5e3 + order, torch.full_like(sim, -1e4))

            return score

        choices = {"own rows (cold_neighbours 0)": None}
        choices.update(
            {f"mean k{k} τ{tau}": mean_rows(k, tau) for k, tau in ((1, 1.0), (3, 0.05), (5, 0.05), (10, 0.05))}
        )
        choices.update({f"max k{k} -{d}": best_neighbour(k, d) for k in (1, 3, 5) for d in (0.0, 1.0, 2.0)})
        shares = {"validation's": valid_new, "0.01": 0.01, "0.05": 0.05, "0.1": 0.1}
        choices.update({f"mixture, new-item share {name}": mixture(v) for name, v in shares.items()})
        floors = (-1.0, 0.5, 0.6, 0.7, 0.8)
        choices.update({f"slots {n}, similarity ≥ {f}": slots(n, f) for n in (1, 2) for f in floors})
        choices.update({f"fresh, new-item share {t} × the inputs'": fresh(t) for t in (1, 2)})
        choices["fresh popularity (no titles), share 1 × the inputs'"] = fresh(1, with_titles=False)
        choices["fresh slot: 1 slot, new items by fresh evidence"] = slots(1, -1.0, by_fresh=True)
        fitted = {split: chain.weight for split, chain in chains.items()}
        print(f"new_item_chain's prior weight m (leave-one-out likelihood of the inputs' transitions): {fitted}")
        choices["new_item_chain alone, m fitted on the inputs"] = with_chain(None)
        choices.update({f"new_item_chain, m = {m}": with_chain(m) for m in (10, 100, 1000)})

        def shipped_scoring(split: str, weight: float | None):
            """The model's own scoring of a split, with rows fitted to its inputs as ``sicsrec fold-in``
            fits them for the test split (validation too, here: under the cold-start protocol its
            inputs end with held-out items, so λ can be read off validation)."""
            model.network.cold_neighbours = shipped[0]
            model.hparams.new_item_fold_in = model.hparams.new_item_chain = True
            model.hparams.new_item_fold_in_weight = weight
            histories = dm.split_histories(split)
            model.bind_histories(histories, model.fit_new_item_rows(histories))
            vectors, chain = model.item_vectors(), model.chain
            model.network.cold_neighbours = 0
            model.bind_histories(None)
            return vectors, chain

        bound = {}

        def with_fold_in(weight: float | None = None):
            def score(users, scores, last, mask, split):
                if (split, weight) not in bound:
                    bound[split, weight] = shipped_scoring(split, weight)
                vectors, chain = bound[split, weight]
                own = item_scores(users, vectors, *model.scoring())
                return (own if chain is None else chain(own, last))[:, new]

            return score

        choices["new_item_fold_in + new_item_chain (shipped)"] = with_fold_in()
        choices.update({f"new_item_fold_in, λ = {w:g}": with_fold_in(w) for w in FOLD_IN_WEIGHTS})
        if dm.cold_items == 0:  # one step back is the standard split's
            factor, valid_share, valid_mass = one_step_back_factor(dm)
            test_targets = torch.cat([t for _, t, *_ in splits["test"]])
            test_share = float(torch.isin(test_targets, chains["test"].items).float().mean())
            test_mass = float(torch.cat([chains["test"].probabilities(b[3]).sum(1) for b in splits["test"]]).mean())
            print(
                f"the chain's new-item mass against the share of targets among its items: one step back "
                f"(validation targets) {valid_mass:.4f} vs {valid_share:.4f}, factor {factor:.2f}; test (read off "
                f"the test targets, for the record; no row uses it) {test_mass:.4f} vs {test_share:.4f}, "
                f"factor {test_share / test_mass:.2f}"
            )
            choices[f"new_item_chain × {factor:.2f} (fitted one step back)"] = with_chain(None, factor)
            choices.update({f"new_item_chain × {g}": with_chain(None, g) for g in (2, 4, 8)})
        choices = {k: v for k, v in choices.items() if re.search(args.only, k) or v is None}
        cold_protocol = dm.cold_items > 0
        groups = "held-out, rest" if cold_protocol else "cold, rest"
        head = " | ".join(f"{s} {p}: HR/NDCG, {groups}" for s in splits for p in ("recbole", "ninerec"))
        print(f"| scoring of never-seen items | {head} |")
        print("|---|" + "---|" * 4)
        for name, fn in choices.items():
            cells = []
            for split, batches in splits.items():
                for protocol in ("recbole", "ninerec"):
                    ranks, targets, held_out = [], [], []
                    for users, target, history, last, held in batches:
                        scores = item_scores(users, table, *model.scoring())
                        mask = history if protocol == "ninerec" else None
                        if fn is not None:
                            scores[:, new] = fn(users, scores, last, mask, split)
                        ranks.append(target_ranks(scores, target, mask))
                        targets.append(target)
                        held_out.append(held)
                    r = torch.cat(ranks)
                    cold = torch.cat(held_out) == 1 if cold_protocol else ~model.seen_items[torch.cat(targets)]
                    m, mc, mr = (metrics_from_ranks(x, (10,)) for x in (r, r[cold], r[~cold]))
                    hr, ndcg = 100 * m["hr@10"], 100 * m["ndcg@10"]
                    cells.append(f"{hr:.2f} / {ndcg:.2f}, {100 * mc['hr@10']:.2f}, {100 * mr['hr@10']:.2f}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def one_step_back_factor(dm) -> tuple[float, float, float]:
    """How far the chain's probabilities fall short one step back: every sequence's training part
    without its last item as training, its training part as the inputs and its validation item as
    the target. Returns the share of those targets among the chain's items over the chain's mean
    mass (the factor), the share and the mass. Reads validation targets, as tuning does."""
    sequences = [q for q in dm.sequences if len(q) >= 4]
    seen = torch.zeros(dm.num_items + 1, dtype=torch.bool)
    seen[torch.from_numpy(np.concatenate([q[:-3] for q in sequences]))] = True
    histories = [q[:-2] for q in sequences]
    chain = NewItemChain(histories, seen)
    targets = torch.from_numpy(np.array([q[-2] for q in sequences]))
    share = float(torch.isin(targets, chain.items).float().mean())
    mass = float(chain.probabilities(torch.tensor([int(h[-1]) for h in histories])).sum(1).mean())
    return share / mass, share, mass


def fitted_temperature(
    similarity: torch.Tensor, transitions: torch.Tensor, seen: torch.Tensor, log_prior: torch.Tensor | None = None
) -> float:
    """The τ under which softmax(log_prior + title similarity / τ) over the seen items best predicts
    the next item of each training transition (maximum likelihood on a grid): how sharp title
    similarity is, learnt without any validation or test target."""
    a, b = transitions.nonzero(as_tuple=True)
    weight = transitions[a, b]
    prior = 0.0 if log_prior is None else log_prior[seen]
    sim = similarity[a][:, seen].clone()
    sim[seen.nonzero().squeeze(1).unsqueeze(0) == a.unsqueeze(1)] = float("-inf")
    rank_of = torch.full((len(seen),), -1, dtype=torch.long)
    rank_of[seen] = torch.arange(int(seen.sum()))
    grid = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
    likelihood = [
        float((weight * (prior + sim / t).log_softmax(-1).gather(1, rank_of[b].unsqueeze(1)).squeeze(1)).sum())
        for t in grid
    ]
    return grid[max(range(len(grid)), key=likelihood.__getitem__)]


if __name__ == "__main__":
    main()
