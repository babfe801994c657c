"""What training the top text-encoder layers with the recommender would cost a step, on CPU.

    .venv/bin/python benchmarks/text_layer_cost.py [--root ../shared/data/ninerec/Bili_Food] \
        [--layers 1 2] [--items all 512] [--steps 3] [--threads 1]

The design it measures (issue #37, item 3): the frozen lower layers of all-MiniLM-L6-v2 run once
and their token states are cached; in each training step the top ``k`` layers run forward and
backward over the titles of the items that step scores, then are mean-pooled to one vector per
item. Full-catalogue scoring (what stage 1's softmax does) needs every item each step (``all``);
a sampled softmax needs only the step's items (e.g. 512). Prints seconds per step (forward +
backward, the mean over ``--steps`` after one warm-up step; titles in chunks of 256 of similar
length) and the tokens a step pushes through. Compare with benchmarks/stage_speed.py's stage-1
epoch (steps an epoch: training targets / batch size). Nothing here trains a recommender.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from sicsrec.content.encoders import TextEncoder, mean_pool
from sicsrec.data.prepare import prepare


def cached_states(encoder: TextEncoder, titles: list[str], frozen: int, batch_size: int = 256):
    """Token states after the lowest ``frozen`` blocks, and the attention mask, for every title."""
    model = encoder.model
    tokens = encoder.tokenize(titles)
    states = []
    with torch.no_grad():
        for i in range(0, len(titles), batch_size):
            ids, mask = tokens["input_ids"][i : i + batch_size], tokens["attention_mask"][i : i + batch_size]
            states.append(run_blocks(encoder.layers()[:frozen], model.embeddings(input_ids=ids), mask))
    return torch.cat(states), tokens["attention_mask"]


def run_blocks(blocks, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BERT blocks over token states ``h`` (N, T, D) with padding ``mask`` (N, T)."""
    additive = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
    for block in blocks:
        out = block(h, attention_mask=additive)
        h = out[0] if isinstance(out, tuple) else out
    return h


def top_forward(blocks, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The trained top blocks over cached states, mean-pooled over real tokens (as TextEncoder)."""
    return mean_pool(run_blocks(blocks, states, mask), mask)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="../shared/data/ninerec/Bili_Food")
    p.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--items", nargs="+", default=["all", "512"])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = prepare(args.root)
    titles = data.titles_in("en")
    encoder = TextEncoder("minilm")
    depth = len(encoder.layers())
    machine = platform.processor() or platform.machine()
    print(f"{data.name}: {len(titles):,} items; all-MiniLM-L6-v2 ({depth} blocks); {machine}, {args.threads} thread(s)")
    print("| trained blocks | items a step | tokens a step (real / padded) | seconds a step, forward + backward |")
    print("|---:|---:|---:|---:|")
    check = titles[:64]
    with torch.no_grad():
        fresh = encoder(**encoder.tokenize(check))
    for k in args.layers:
        states, mask = cached_states(encoder, titles, depth - k)
        blocks = encoder.layers()[depth - k :]
        for b in blocks:
            b.eval()
        with torch.no_grad():  # the design's premise: cached lower states + top blocks = the whole encoder
            gap = (top_forward(blocks, *cached_states(encoder, check, depth - k)) - fresh).abs().max().item()
        assert gap < 1e-4, f"cached states + top {k} blocks differ from a fresh forward pass by {gap:g}"
        for b in blocks:
            b.train()
        for items in args.items:
            n = len(titles) if items == "all" else min(int(items), len(titles))
            times = []
            for step in range(args.steps + 1):
                idx = torch.randperm(len(titles))[:n]
                idx = idx[torch.argsort(mask[idx].sum(1))]  # similar lengths in a chunk pad less
                started, padded = time.perf_counter(), 0
                vectors = []
                for chunk in idx.split(256):
                    width = int(mask[chunk].sum(1).max())
                    padded += len(chunk) * width
                    vectors.append(top_forward(blocks, states[chunk, :width], mask[chunk, :width]))
                torch.cat(vectors).pow(2).sum().backward()
                if step:
                    times.append(time.perf_counter() - started)
                for b in blocks:
                    b.zero_grad(set_to_none=True)
            real = int(mask[idx].sum())
            print(f"| {k} | {n:,} | {real:,} / {padded:,} | {sum(times) / len(times):.2f} |")


if __name__ == "__main__":
    main()
