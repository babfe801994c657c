"""How much of a trained model's ranking goes to the user's own last input item.

    .venv/bin/python benchmarks/last_item_rank.py runs/bili_food/id/seed2024

In the NineRec sets no user interacts with an item twice, so the last input item is never the
target; under the ``recbole`` protocol (history not masked) a model that still ranks it high loses
HR and NDCG. Prints, for validation and test: the share of users whose top-1 (top-10) holds their
last item, and HR@10 / NDCG@10 as the model ranks, with the last item masked, and with the whole
history masked (the ``ninerec`` protocol).
"""

from __future__ import annotations

import argparse

import torch

from sicsrec.evaluation import metrics_from_ranks, target_ranks
from sicsrec.nn.attention import last_items
from sicsrec.serving import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder (its config.yaml and best checkpoint) or a config file")
    parser.add_argument("--ckpt_path", default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, dm, _ = load_model(args.run, args.ckpt_path)
    dm.setup("test")
    bind_split = getattr(model, "bind_split", None)  # models that score new items from the histories being ranked
    print(
        "| split | last item 1st | last item in top 10 | HR@10 / NDCG@10 as ranked | last item masked "
        "| history masked |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for split, loader in (("valid", dm.val_dataloader()), ("test", dm.test_dataloader())):
        first = in_top = users = 0
        ranks = {"as ranked": [], "last masked": [], "history masked": []}
        if bind_split is not None:
            bind_split(split, dm)  # as `sicsrec validate` / `sicsrec test` bind it
        with torch.no_grad():
            for batch in loader:
                scores = model.score(batch)
                inputs = batch["input"]
                last = last_items(inputs)
                top = scores.topk(10).indices
                first += int((top[:, 0] == last).sum())
                in_top += int((top == last[:, None]).any(1).sum())
                users += len(last)
                masked = torch.zeros_like(batch["history"], dtype=torch.bool)
                masked[torch.arange(len(last)), (batch["history"] > 0).sum(1) - 1] = True
                ranks["as ranked"].append(target_ranks(scores, batch["target"]))
                ranks["last masked"].append(target_ranks(scores, batch["target"], batch["history"] * masked))
                ranks["history masked"].append(target_ranks(scores, batch["target"], batch["history"]))
        cells = []
        for r in ranks.values():
            m = metrics_from_ranks(torch.cat(r), (10,))
            cells.append(f"{100 * m['hr@10']:.2f} / {100 * m['ndcg@10']:.2f}")
        print(f"| {split} | {100 * first / users:.1f} % | {100 * in_top / users:.1f} % | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
