"""How a trained stage-2 run would rank never-seen items under other scorings (no retraining).

    .venv/bin/python benchmarks/cold_scoring.py runs/bili_food/stage2/seed2024

An item that occurs in no user's training part has an ID row training never fitted. The shipped
model lets it borrow the content-weighted mean of its ``cold_neighbours`` nearest seen items' rows
(``mean k τ``). This script scores the same checkpoint's users against other choices for those
items only — the mean over k neighbours at temperature τ, or the best score among its k nearest
seen neighbours minus a margin δ (``max k -δ``) — and prints, for validation and test, under the
``recbole`` and ``ninerec`` protocols: HR@10 / NDCG@10, HR@10 on targets that occur in no training
part (cold) and on the others (rest). Seen items keep their scores in every row.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from sicsrec.evaluation import metrics_from_ranks, target_ranks
from sicsrec.nn.losses import item_scores
from sicsrec.serving import Recommender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a stage-2 run folder (its config.yaml and best checkpoint)")
    parser.add_argument("--ckpt_path", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    recommender = Recommender.load(args.run, args.ckpt_path)
    model, dm = recommender.model, recommender.datamodule
    model.network.cold_neighbours = 0  # the items' own rows: every scoring below replaces them
    dm.setup("test")
    model.eval()
    seen = model.seen_items.clone()
    seen[0] = False
    with torch.no_grad():
        content = model.content_table(model.network.content_encoder)
        table = model.network.item_table(content, model.seen_items)
        unit = F.normalize(content, dim=-1)
        new, old = (~seen).nonzero().squeeze(1), seen.nonzero().squeeze(1)
        new = new[new > 0]
        cosines, nearest = (unit[new] @ unit[old].T).topk(20, dim=1)
        splits = {
            split: [(model.user_vectors(b), b["target"], b["history"]) for b in loader]
            for split, loader in (("valid", dm.val_dataloader()), ("test", dm.test_dataloader()))
        }

        def mean_rows(k: int, tau: float):  # the model's own borrowing, with other k and τ
            model.network.cold_neighbours, model.network.neighbour_temperature = k, tau
            rows = model.network.borrowed_rows(table, content, model.seen_items)[new]
            return lambda users, scores: item_scores(users, rows, *model.scoring())

        def best_neighbour(k: int, margin: float):
            return lambda users, scores: scores[:, old[nearest[:, :k]]].amax(-1) - margin

        choices = {"own rows (cold_neighbours 0)": None}
        choices.update(
            {f"mean k{k} τ{tau}": mean_rows(k, tau) for k, tau in ((1, 1.0), (3, 0.05), (5, 0.05), (10, 0.05))}
        )
        choices.update({f"max k{k} -{d}": best_neighbour(k, d) for k in (1, 3, 5) for d in (0.0, 1.0, 2.0)})
        head = " | ".join(f"{s} {p}: HR/NDCG, cold, rest" for s in splits for p in ("recbole", "ninerec"))
        print(f"| scoring of never-seen items | {head} |")
        print("|---|" + "---|" * 4)
        for name, fn in choices.items():
            cells = []
            for batches in splits.values():
                for protocol in ("recbole", "ninerec"):
                    ranks, targets = [], []
                    for users, target, history in batches:
                        scores = item_scores(users, table, *model.scoring())
                        if fn is not None:
                            scores[:, new] = fn(users, scores)
                        ranks.append(target_ranks(scores, target, history if protocol == "ninerec" else None))
                        targets.append(target)
                    r, cold = torch.cat(ranks), ~model.seen_items[torch.cat(targets)]
                    m, mc, mr = (metrics_from_ranks(x, (10,)) for x in (r, r[cold], r[~cold]))
                    hr, ndcg = 100 * m["hr@10"], 100 * m["ndcg@10"]
                    cells.append(f"{hr:.2f} / {ndcg:.2f}, {100 * mc['hr@10']:.2f}, {100 * mr['hr@10']:.2f}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
