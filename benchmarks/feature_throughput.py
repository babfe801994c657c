"""Item-feature throughput of the offline default encoders on this machine, and the cache hit.

    .venv/bin/python benchmarks/feature_throughput.py [--items 512] [--threads 1]

Encodes generated items (English titles; covers resized to the model's 224×224) with MiniLM
(all-MiniLM-L6-v2, mean pooling, max 64 tokens) and EfficientNet-Lite0 (bundled ImageNet
weights), then asks again with the same key in the same process (a cache hit).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from sicsrec.content.encoders import ImageEncoder, TextEncoder
from sicsrec.content.featurize import image_item_features, text_item_features
from sicsrec.data.generate import generate
from sicsrec.data.prepare import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "Gen", users=200, items=args.items, seed=0, cover_size=256)
        data = prepare(root, cache_dir=tmp)
        rows = []
        for name, enc, fn, bs in (
            ("MiniLM-L6 (text)", TextEncoder(), text_item_features, 128),
            ("EfficientNet-Lite0 (image)", ImageEncoder(), image_item_features, 64),
        ):
            start = time.perf_counter()
            fn(enc, data, batch_size=bs, cache_dir=tmp, progress=False)
            first = time.perf_counter() - start
            start = time.perf_counter()
            fn(enc, data, batch_size=bs, cache_dir=tmp, progress=False)
            hit = time.perf_counter() - start
            rows.append((name, enc.dim, args.items / first, hit))
    print(f"machine: {platform.machine()}, torch threads {args.threads}, torch {torch.__version__}, {args.items} items")
    print("| encoder | dim | items/s | cache hit, same process (s) |\n|---|---:|---:|---:|")
    for name, dim, rate, hit in rows:
        print(f"| {name} | {dim} | {rate:,.0f} | {hit:.3f} |")


if __name__ == "__main__":
    main()
