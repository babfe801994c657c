"""Are text features useful for next-item prediction? A check that does not reuse the pairs.

    .venv/bin/python benchmarks/text_usefulness.py --dataset Bili_Food \
        --align-checkpoint runs/bili_food/align/checkpoints/best.ckpt

For every user, rank all items by cosine similarity of their text features to the user's last
*training* item and measure recall@10 (and NDCG@10) of the user's *validation* item — an item
the judge never saw. Reported for raw MiniLM features and for the aligned encoder, next to
chance (10 / items) and to ranking by popularity.

``--wordllama`` adds WordLlama's static token embeddings (``pip install wordllama==0.4.0.post1``: its
wheel ships the 256-d weights, and its Llama-2 tokenizer reads the Chinese titles that MiniLM's
English vocabulary mostly maps to [UNK]): a second offline text encoder to judge before any training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from sicsrec.content.encoders import TextEncoder
from sicsrec.content.featurize import text_item_features
from sicsrec.data.prepare import prepare
from sicsrec.evaluation import metrics_from_ranks, target_ranks

ROOT = Path(__file__).resolve().parents[1]


def evaluate(scores: torch.Tensor, queries: torch.Tensor, targets: torch.Tensor) -> dict:
    scores = scores.clone()
    scores[torch.arange(len(queries)), queries] = float("-inf")  # the query item itself is not an answer
    return metrics_from_ranks(target_ranks(scores, targets), ks=(10,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="Bili_Food")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "ninerec"))
    parser.add_argument("--align-checkpoint", default=None)
    parser.add_argument("--text-column", default="en")
    parser.add_argument("--wordllama", action="store_true", help="also WordLlama (256-d, weights in its wheel)")
    args = parser.parse_args()

    data = prepare(Path(args.data_root) / args.dataset)
    seqs = [data.sequence(u) for u in range(data.num_users)]
    queries = torch.tensor([int(s[-3]) for s in seqs])  # last training item
    targets = torch.tensor([int(s[-2]) for s in seqs])  # validation item
    counts = np.bincount(np.concatenate([s[:-2] for s in seqs]), minlength=data.num_items + 1).astype(np.float32)
    rows = [
        ("chance", {"hr@10": 10 / data.num_items, "ndcg@10": float("nan")}),
        ("popularity", evaluate(torch.from_numpy(counts).expand(len(seqs), -1), queries, targets)),
    ]

    encoders = [("raw MiniLM", TextEncoder())]
    if args.align_checkpoint:
        from sicsrec.modules.align import AlignModule

        module = AlignModule.load_from_checkpoint(args.align_checkpoint, map_location="cpu", weights_only=False)
        encoders.append(("aligned (SFT)", module.merged_encoders()[0]))
    # WordLlama first: a missing package stops the run before the slower MiniLM features
    titles = data.titles_in(args.text_column)
    extra = [("WordLlama l2_supercat 256-d", wordllama_table(titles))] if args.wordllama else []
    tables = [
        (name, np.array(text_item_features(encoder, data, args.text_column).values)) for name, encoder in encoders
    ] + extra
    for name, values in tables:
        table = torch.nn.functional.normalize(torch.from_numpy(values).float(), dim=-1)
        rows.append((name, evaluate(table[queries] @ table.T, queries, targets)))

    print(
        f"{args.dataset} ({args.text_column} titles), {len(seqs):,} users, {data.num_items:,} items: "
        "rank all items by similarity to the last training item; target = validation item"
    )
    print("| features | recall@10 | NDCG@10 |\n|---|---:|---:|")
    for name, m in rows:
        print(f"| {name} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} |")


def wordllama_table(titles: list[str]) -> np.ndarray:
    """One row per item (row 0: padding) from the weights inside the installed wordllama wheel."""
    try:
        import wordllama
    except ImportError:
        raise SystemExit(
            "--wordllama needs `pip install wordllama==0.4.0.post1` (its wheel ships the weights)"
        ) from None
    # The wheel keeps its tokenizer under tokenizers/, where load() looks only in its cache folder: point it there.
    package = Path(wordllama.__file__).parent
    model = wordllama.WordLlama.load(dim=256, cache_dir=package, disable_download=True)
    vectors = np.asarray(model.embed(list(titles)), dtype=np.float32)
    return np.concatenate([np.zeros((1, vectors.shape[1]), np.float32), vectors])


if __name__ == "__main__":
    main()
