"""Latency of ``recommend`` for one history and for 1,000, on a trained run, on this machine.

    .venv/bin/python benchmarks/recommend_latency.py --run runs/bili_food/stage2/version_4 [--threads 1 2]

The model stays loaded (as in a service): each timing is one ``Recommender.recommend`` call
(history lookup, model input, user vectors, scores over all items, seen-item exclusion, top 10),
median of ``--repeats``. Histories are users' whole sequences from the run's own data. Also timed:
exact search of the same 1,000 user vectors over ``export``'s item vectors with numpy (what an
index replaces), and one ``sicsrec recommend`` process end to end (imports and model loading
included).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sicsrec.serving import Recommender

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(call, repeats: int) -> float:
    call()  # warm-up: content tables, allocator
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run folder (config.yaml + checkpoints/best*.ckpt)")
    parser.add_argument("--ckpt-path", default=None)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    server = Recommender.load(args.run, args.ckpt_path)
    data = server.data
    histories = [[data.item_ids[i - 1] for i in data.sequence(u)] for u in range(min(1000, data.num_users))]
    head = getattr(server.model.hparams, "head", "-")
    print(
        f"{type(server.model).__name__} (head {head}) on {data.name}: {data.num_items:,} items, "
        f"{len(histories)} histories, machine {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads available"
    )
    print(f"{'threads':>7} {'histories':>9} {'ms/call':>9} {'histories/s':>12}  what")
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for n in (1, len(histories)):
            asked = histories[:n]
            seconds = median_seconds(
                lambda asked=asked: server.recommend(asked, top_k=10),
                args.repeats if n == 1 else max(3, args.repeats // 4),
            )
            rows.append((threads, n, seconds))
            print(f"{threads:>7} {n:>9} {1000 * seconds:>9.2f} {n / seconds:>12.0f}  Recommender.recommend, top 10")
    # exact search over the export with numpy (dot scoring; cosine normalises first)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = json.loads(server.export(tmp).read_text())
        items = np.load(Path(tmp) / manifest["vectors"])
    users = np.asarray([r.vector for r in server.recommend(histories, with_vectors=True)], dtype=np.float32)
    if manifest["scoring"] == "cosine":
        items = items / np.linalg.norm(items, axis=1, keepdims=True).clip(1e-12)
        users = users / np.linalg.norm(users, axis=1, keepdims=True).clip(1e-12)
    search = median_seconds(lambda: np.argpartition(-(users @ items.T), 10, axis=1)[:, :10], 5)
    print(
        f"{'numpy':>7} {len(users):>9} {1000 * search:>9.2f} {len(users) / search:>12.0f}  "
        "exact top 10 over the exported item vectors (user vectors given)"
    )
    # one process end to end
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write(json.dumps({"id": "one", "items": histories[0]}) + "\n")
    cmd = [
        sys.executable,
        "-m",
        "sicsrec.cli",
        "recommend",
        "--run",
        args.run,
        "--histories",
        f.name,
        "--out",
        "/dev/null",
    ] + (["--ckpt_path", args.ckpt_path] if args.ckpt_path else [])
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    print(
        f"{'process':>7} {1:>9} {1000 * (time.perf_counter() - started):>9.0f} {'':>12}  "
        "`sicsrec recommend` for one history, imports and model loading included"
    )


if __name__ == "__main__":
    main()
