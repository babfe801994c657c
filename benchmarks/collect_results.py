"""Summarise runs: mean ± std over seeds of each run folder's metrics.json, as a Markdown table.

    .venv/bin/python benchmarks/collect_results.py runs/bili_food/id runs/bili_dance/id ...

Each argument is a folder whose sub-folders (one per seed) hold a metrics.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METRICS = ("test/hr@5", "test/hr@10", "test/hr@20", "test/ndcg@5", "test/ndcg@10", "test/ndcg@20", "test/mrr")


def summarise(folder: Path) -> dict:
    reports = [json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))]
    if not reports:
        raise SystemExit(f"no */metrics.json under {folder}")
    out = {"runs": len(reports), "seeds": [r.get("seed") for r in reports], "dataset": reports[0].get("dataset")}
    for key in METRICS + ("epochs", "seconds_per_epoch"):
        values = [r[key] for r in reports if r.get(key) is not None]
        out[key] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    header = "| run | dataset | seeds | " + " | ".join(m.split("/")[1].upper() for m in METRICS) + " | epochs | s/epoch |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for folder in args.folders:
        s = summarise(folder)
        cells = [f"{100 * s[m][0]:.2f} ± {100 * s[m][1]:.2f}" for m in METRICS]
        print(f"| {folder} | {s['dataset']} | {', '.join(map(str, s['seeds']))} | " + " | ".join(cells)
              + f" | {s['epochs'][0]:.0f} | {s['seconds_per_epoch'][0]:.1f} |")


if __name__ == "__main__":
    main()
