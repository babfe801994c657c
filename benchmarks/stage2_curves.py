"""Validation curves of both stages, mean over seeds: where the method head's tuning ends against
the ensemble head's untuned start (issue "Stage 2 that learns", done-when 2).

    .venv/bin/python benchmarks/stage2_curves.py runs/gpu_s8 --sets bili_food bili_dance bili_movie

For each set under the folder (``<set>/stage1/seedN``, ``<set>/stage2/seedN`` — the method head —
and ``<set>/stage2/ensemble-seedN``, as `sicsrec run` and `benchmarks/gpu_sweep.py` lay them out)
it prints validation HR@10 (×100, mean over seeds): the stage-1 ID and content encoders at their
first and best epoch and at the epoch stage 1 kept, the ensemble's untuned start (the sum of both
encoders' scores, validated by `ValidateStartingPoint`) and the method head's start, its best tuned
epoch and the epoch of that best; and writes one SVG per set with the stage-2 curves (epoch 0 = the
validated start), with the ensemble's start and the stage-1 ID encoder's best epoch as lines.
``--variant V`` reads the stage-1 and method-head runs ``V-seedN`` instead (the ensemble head's
are always ``ensemble-seedN``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sicsrec.report import svg_lines, validation_curve


def read_curve(path: Path, view: str) -> tuple[float | None, list[float]]:
    """``(start, per-epoch values)`` of a run's validation HR@10 (``view``: "", "id" or "content");
    start is the validated starting point when the run has one."""
    curve = validation_curve(path, view)
    start = next((v for epoch, v in curve if epoch == -1), None)
    return start, [v for epoch, v in curve if epoch >= 0]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def mean_curve(curves: list[list[float]]) -> list[float]:
    """Mean over seeds, epoch by epoch, as far as every seed ran."""
    n = min(len(c) for c in curves)
    return [mean([c[i] for c in curves]) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="holds <set>/stage1 and <set>/stage2 run folders")
    parser.add_argument("--sets", nargs="+", default=["bili_food", "bili_dance", "bili_movie"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[2024, 2025, 2026])
    parser.add_argument("--variant", default="", help="read <variant>-seedN runs (stage 1 and method head)")
    parser.add_argument("--figures", default="docs/figures", help="where the SVGs go ('' for none)")
    args = parser.parse_args()
    version = (lambda n: f"{args.variant}-seed{n}") if args.variant else (lambda n: f"seed{n}")
    print("validation HR@10 ×100, mean over seeds " + ", ".join(map(str, args.seeds)))
    print(
        "| set | ID encoder first → best (epoch) → kept | content encoder first → best (epoch) → kept "
        "| ensemble start → best tuned | method start → best tuned (epoch) | method tuned ≥ ensemble start |"
    )
    print("|---|---|---|---|---|---|")
    for name in args.sets:
        root = Path(args.folder) / name
        s1 = {
            v: [read_curve(root / "stage1" / version(n) / "metrics.csv", v)[1] for n in args.seeds]
            for v in ("id", "content")
        }
        kept = [read_curve(root / "stage1" / version(n) / "metrics.csv", "")[1] for n in args.seeds]
        kept_epoch = [max(range(len(c)), key=c.__getitem__) for c in kept]
        method = [read_curve(root / "stage2" / version(n) / "metrics.csv", "") for n in args.seeds]
        ensemble = [read_curve(root / "stage2" / f"ensemble-seed{n}" / "metrics.csv", "") for n in args.seeds]
        cells = []
        for v in ("id", "content"):
            best = [max(range(len(c)), key=c.__getitem__) for c in s1[v]]
            cells.append(
                f"{100 * mean([c[0] for c in s1[v]]):.2f} → {100 * mean([max(c) for c in s1[v]]):.2f} "
                f"({mean(best) + 1:.1f}) → {100 * mean([c[e] for c, e in zip(s1[v], kept_epoch)]):.2f} "
                f"(epoch {mean(kept_epoch) + 1:.1f})"
            )
        ensemble_start = mean([s for s, _ in ensemble])
        method_best = [max(c) for _, c in method]
        method_epoch = [max(range(len(c)), key=c.__getitem__) + 1 for _, c in method]
        cells.append(f"{100 * ensemble_start:.2f} → {100 * mean([max(c) for _, c in ensemble]):.2f}")
        cells.append(
            f"{100 * mean([s for s, _ in method]):.2f} → {100 * mean(method_best):.2f} ({mean(method_epoch):.1f})"
        )
        beaten = sum(b > s for b, (s, _) in zip(method_best, ensemble))
        print(f"| {name} | " + " | ".join(cells) + f" | {beaten}/{len(args.seeds)} seeds |")
        if args.figures:
            series = {
                "method head": list(enumerate([mean([s for s, _ in method]), *mean_curve([c for _, c in method])])),
                "ensemble head": list(enumerate([ensemble_start, *mean_curve([c for _, c in ensemble])])),
            }
            length = max(len(s) for s in series.values())
            series["ensemble start"] = [(0, ensemble_start), (length - 1, ensemble_start)]
            id_best = mean([max(c) for c in s1["id"]])
            series["ID encoder's own best"] = [(0, id_best), (length - 1, id_best)]
            series = {k: [(x, 100 * y) for x, y in s] for k, s in series.items()}
            out = Path(args.figures) / f"stage2_curves_{name}{'_' + args.variant if args.variant else ''}.svg"
            title = f"{name}: stage-2 validation HR@10 (×100, mean over seeds; epoch 0 = untuned start)"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(svg_lines(series, title, "epoch", "HR@10"), encoding="utf-8")
            print(f"  figure: {out}")


if __name__ == "__main__":
    main()
