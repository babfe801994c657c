"""Untrained baselines for new items: popularity, and every item ranked by its title-feature
similarity to the user's last input item (the last item itself excluded).

    .venv/bin/python benchmarks/title_similarity.py --root ../shared/data/ninerec/Bili_Food \
        --features runs/bili_food/features_raw/features.json [--cold-items 0.1]

Prints HR@10 / NDCG@10 (×100) for validation and test, overall and by the target's occurrences in
all users' training parts (cold 0, rare 1–4, warm ≥ 5) — and, under the cold-start protocol, for
the users whose target is a held-out item and for the rest. Nothing is trained: it is the bar a
model that ranks new items through their content has to clear. A third baseline measures a signal
that is not content: ``fresh popularity`` ranks first the new items (no training occurrence) that
occur in the split's own inputs — interactions that arrived after training, which a deployed
model sees without retraining — by those occurrences, then every other item by its training
popularity.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from sicsrec.data.datamodule import SequenceDataModule
from sicsrec.evaluation import HELD_OUT_GROUPS, TARGET_BUCKETS, evaluate, popularity_scorer
from sicsrec.nn.attention import last_items


def title_similarity_scorer(features: torch.Tensor):
    """Cosine similarity of each item's features to the last input item's; that item itself -inf."""
    unit = F.normalize(features.float(), dim=-1)

    def score(batch):
        inputs = batch["input"]
        last = last_items(inputs)
        scores = unit[last] @ unit.T
        scores[torch.arange(len(last)), last] = float("-inf")
        return scores

    return score


def fresh_popularity_scorer(input_counts: torch.Tensor, train_counts: torch.Tensor):
    """New items that occur in the evaluation inputs first (by those occurrences), then the rest by
    training popularity: how far popularity among the interactions after training reaches."""
    fresh = (train_counts == 0) & (input_counts > 0)
    scores = torch.where(fresh, train_counts.max() + input_counts, train_counts).float()  # exact below 2^24
    scores[0] = float("-inf")
    return lambda batch: scores.expand(batch["target"].shape[0], -1)


def input_counts(loader, num_items: int) -> torch.Tensor:
    """Occurrences of each item in the split's inputs (every user's history before the target)."""
    counts = torch.zeros(num_items + 1, dtype=torch.long)
    for batch in loader:
        counts += torch.bincount(batch["history"].flatten(), minlength=num_items + 1)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--features", required=True, help="features.json written by `sicsrec features`")
    parser.add_argument("--modality", default="text")
    parser.add_argument("--cold-items", type=float, default=0.0)
    parser.add_argument("--cold-seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    dm = SequenceDataModule(args.root, features=args.features, cold_items=args.cold_items, cold_seed=args.cold_seed)
    dm.setup("test")
    features = dm.item_features()[0][args.modality]
    scorers = {
        "popularity": popularity_scorer(dm.train_item_counts()),
        "title similarity": title_similarity_scorer(features),
    }
    groups = [g for g in (*TARGET_BUCKETS, *HELD_OUT_GROUPS) if args.cold_items > 0 or g in TARGET_BUCKETS]
    print(f"{dm.data.name}: {dm.num_items} items, {len(dm.sequences)} users, chance HR@10 {1000 / dm.num_items:.2f}")
    print("| split | baseline | HR@10 | NDCG@10 | " + " | ".join(f"{g} HR@10 [users]" for g in groups) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(groups))
    for split, loader in (("valid", dm.val_dataloader()), ("test", dm.test_dataloader())):
        fresh = fresh_popularity_scorer(input_counts(loader, dm.num_items), dm.train_item_counts())
        for name, scorer in {**scorers, "fresh popularity": fresh}.items():
            m = evaluate(scorer, loader)
            cells = " | ".join(f"{100 * m.get(f'{g}/hr@10', 0.0):.2f} [{m[f'{g}/users']:.0f}]" for g in groups)
            print(f"| {split} | {name} | {100 * m['hr@10']:.2f} | {100 * m['ndcg@10']:.2f} | {cells} |")


if __name__ == "__main__":
    main()
