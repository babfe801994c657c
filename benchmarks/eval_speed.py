"""Evaluation speed on a real dataset: ranking throughput and a whole test pass on this machine.

    .venv/bin/python benchmarks/eval_speed.py [--dataset Bili_Movie] [--threads 1]

Prints: users ranked per second by the exact full-ranking code alone (scores given), and the
seconds of a whole test pass (ID encoder forward at hidden 256 + scoring + ranking) over
every user. Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from sicsrec.data import SequenceDataModule
from sicsrec.evaluation import RankingMetrics
from sicsrec.modules import Stage1Module

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="Bili_Movie")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "ninerec"))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--eval-batch-size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.data_root) / args.dataset
    if not root.is_dir():
        raise SystemExit(f"dataset folder not found: {root}")

    dm = SequenceDataModule(str(root), eval_batch_size=args.eval_batch_size)
    dm.setup("test")
    model = Stage1Module(dm.num_items, dm.max_len, use_content=False).eval()
    batches = list(dm.test_dataloader())
    n_users = sum(len(b["user"]) for b in batches)

    with torch.inference_mode():
        scores = [model.score(b) for b in batches]
        rank_times, pass_times = [], []
        for _ in range(args.repeats):
            metric = RankingMetrics()
            t = time.perf_counter()
            for b, s in zip(batches, scores):
                metric.update(b["user"], s, b["target"], b["history"])
            metric.compute()
            rank_times.append(time.perf_counter() - t)

            metric = RankingMetrics()
            t = time.perf_counter()
            for b in dm.test_dataloader():
                metric.update(b["user"], model.score(b), b["target"], b["history"])
            result = metric.compute()
            pass_times.append(time.perf_counter() - t)
    assert result["users"] == n_users

    print(
        f"machine: {platform.processor() or platform.machine()}, torch threads {args.threads}, "
        f"torch {torch.__version__}"
    )
    print("| dataset | users | items | ranking users/s | whole test pass (s) |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| {args.dataset} | {n_users:,} | {dm.num_items:,} | {n_users / min(rank_times):,.0f} | "
        f"{min(pass_times):.2f} |"
    )


if __name__ == "__main__":
    main()
