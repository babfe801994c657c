"""``sicsrec report``: the result files of runs → tables (mean ± std over seeds) and plots.

A *group* is the runs of one folder that differ only in their seed: ``runs/bili_food/stage2/
seed2024`` … form the group ``bili_food/stage2``; ``no_decoder-seed2024`` … the group
``bili_food/stage2 no_decoder``. Each run folder holds the ``metrics.json`` written after its
fit and Lightning's ``metrics.csv`` (the validation curve). Stage 1 reports its two encoders as
two rows. Plots are plain SVG (no plotting library needed).

A folder with a ``tune.json`` (``sicsrec tune``) holds the ID encoder's grid: its pick is the group
``<dataset>/id tuned``, the config as it is ``<dataset>/id RecBole parity``, the other grid points
appear only in the grid table (their validation scores). Every "×" divides by the same dataset's
tuned ID encoder. ``--json`` writes the same numbers machine-readable.
"""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
from pathlib import Path

from sicsrec.evaluation import COVER_GROUPS, HELD_OUT_GROUPS, PROTOCOLS, TARGET_BUCKETS
from sicsrec.io import atomic_path

KS = (5, 10, 20)
BEGIN, END = "<!-- sicsrec report: begin -->", "<!-- sicsrec report: end -->"
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


BUCKETS = tuple(TARGET_BUCKETS)  # cold 0, rare 1–4, warm ≥ 5 training occurrences
NO_COVER = COVER_GROUPS[0]  # targets without a cover, on catalogues with covers


def _views(report: dict) -> list[str]:
    views = {k.split("/")[1] for k in report if k.startswith("test/") and k.count("/") == 2}
    views -= {*BUCKETS, *HELD_OUT_GROUPS, *COVER_GROUPS, *PROTOCOLS}
    return sorted(views) or [""]


def collect(folders: list[Path]) -> dict[str, dict]:
    """``{group name: {"runs": [...], "metrics": {name: [values]}, "curves": [[(epoch, value)], ...]}}``."""
    groups: dict[str, dict] = {}
    for folder in folders:
        tuned = tune_record(Path(folder))
        for path in sorted(Path(folder).glob("*/metrics.json")):
            match = re.fullmatch(r"(?:(.+)-)?seed(\d+)", path.parent.name)
            if not match:
                continue
            variant = match.group(1) or ""
            if tuned is not None:
                roles = [r for r, v in (("tuned", tuned["pick"]), ("RecBole parity", "")) if v == variant]
                if not roles:
                    continue  # another grid point: its validation score is in the grid table
                variant = " = ".join(roles)
            report = json.loads(path.read_text())
            for view in _views(report):
                tag = f"test/{view}/" if view else "test/"
                name = (
                    f"{folder.parent.name}/{folder.name}"
                    + (f" {variant}" if variant else "")
                    + (f" ({view} encoder)" if view else "")
                )
                group = groups.setdefault(
                    name,
                    {
                        "runs": [],
                        "metrics": {},
                        "curves": [],
                        "dataset": folder.parent.name,
                        "tuned_id": "tuned" in variant,
                        "protocol": None,  # from the first run that says
                        "commits": [],
                    },
                )
                group["runs"].append(int(match.group(2)))
                group["commits"].append(report.get("git_commit"))
                group["protocol"] = group["protocol"] or report.get("protocol") or _protocol(report)
                bucket_keys = [f"{b}/{m}" for b in (*BUCKETS, NO_COVER) for m in ("hr@10", "ndcg@10", "users")]
                other_keys = [f"{p}/{m}" for p in PROTOCOLS for m in ("hr@10", "ndcg@10")]
                for key in [f"hr@{k}" for k in KS] + [f"ndcg@{k}" for k in KS] + ["mrr"] + bucket_keys + other_keys:
                    if tag + key in report:
                        group["metrics"].setdefault(key, []).append(report[tag + key])
                group["metrics"].setdefault("epochs", []).append(report.get("epochs"))
                if report.get("best_valid") is not None:  # what choices read: the checkpoint's monitor
                    group["metrics"].setdefault("best_valid", []).append(report["best_valid"])
                group["curves"].append(validation_curve(path.parent / "metrics.csv", view))
    return groups


def tune_record(folder: Path) -> dict | None:
    """``sicsrec tune``'s record of a folder (its point and pick names: ``""`` is the config as it is)."""
    path = folder / "tune.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _protocol(report: dict) -> str | None:
    """A result file's headline protocol, from the other protocol's keys (files before it was written)."""
    return next((o for p, o in zip(PROTOCOLS, PROTOCOLS[::-1]) if any(f"/{p}/" in k for k in report)), None)


def _ratio(group: dict, tuned: dict | None, metric: str) -> str:
    if group is tuned:
        return "1"
    if tuned is None:
        return "–"
    return f"{_mean_std(group['metrics'].get(metric, []))[0] / _mean_std(tuned['metrics'][metric])[0]:.3f}"


def _tuned(groups: dict[str, dict]) -> dict[str, dict]:
    """Each dataset's tuned ID encoder group."""
    return {g["dataset"]: g for g in groups.values() if g["tuned_id"]}


def validation_curve(path: Path, view: str = "") -> list[tuple[int, float]]:
    if not path.is_file():
        return []
    """Validation HR@10 per epoch; a validated starting point (``start/valid/…``) is epoch -1."""
    key = f"valid/{view}/hr@10" if view else "valid/hr@10"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    start = [(-1, float(r[f"start/{key}"])) for r in rows if r.get(f"start/{key}")]
    return start + [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key)]


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(g: dict, metric: str) -> str:
    """Mean ± std ×100; a metric that fewer runs than the group's recorded says over how many."""
    values = g["metrics"].get(metric, [])
    if not any(v is not None for v in values):
        return "–"
    mean, std = _mean_std(values)
    cell = f"{100 * mean:.2f} ± {100 * std:.2f}" if len(values) > 1 else f"{100 * mean:.2f}"
    return cell + (f" ({len(values)} of {len(g['runs'])} runs)" if 0 < len(values) < len(g["runs"]) else "")


def table(groups: dict[str, dict]) -> str:
    """Metrics at every K under the headline protocol; the best validation score (the checkpoint's
    monitor: what every setting is chosen on); HR@10 / NDCG@10 under the other protocol; the ratios
    to the same dataset's tuned ID encoder (when a ``tune.json`` names it)."""
    cols = [f"hr@{k}" for k in KS] + [f"ndcg@{k}" for k in KS] + ["mrr"]
    tuned = _tuned(groups)
    lines = [
        "| run | seeds | protocol | "
        + " | ".join(c.upper() for c in cols)
        + " | epochs | validation | other protocol HR@10 / NDCG@10 | × tuned ID encoder HR@10 / NDCG@10 |",
        "|---|---|---|" + "---:|" * (len(cols) + 4),
    ]
    for name, g in groups.items():
        cells = [_cell(g, c) for c in cols]
        epochs = _mean_std(g["metrics"]["epochs"])[0]
        other = next((p for p in PROTOCOLS if f"{p}/hr@10" in g["metrics"]), None)
        other_cell = f"{other}: {_cell(g, f'{other}/hr@10')} / {_cell(g, f'{other}/ndcg@10')}" if other else "–"
        ratio = " / ".join(_ratio(g, tuned.get(g["dataset"]), m) for m in ("hr@10", "ndcg@10"))
        lines.append(
            f"| {name} | {', '.join(map(str, g['runs']))} | {g['protocol'] or '–'} | "
            + " | ".join(cells)
            + f" | {epochs:.0f} | {_cell(g, 'best_valid')} | {other_cell} | {ratio} |"
        )
    return "\n".join(lines)


def grid_table(folders: list[Path]) -> str:
    """The validation score of every grid point ``sicsrec tune`` fitted, and its pick."""
    lines = []
    for folder in folders:
        record = tune_record(Path(folder))
        if record is None:
            continue
        if not lines:
            lines = [
                f"Grids of `sicsrec tune` (validation {record['monitor']} ×100 at the grid seed; test never read):",
                "",
                "| dataset | grid point | seed | validation | picked |",
                "|---|---|---:|---:|---|",
            ]
        for point in record["points"]:
            values = ", ".join(f"{k.rsplit('.', 1)[-1]} {v:g}" for k, v in point["overrides"].items())
            parity = "" if point["name"] else " (RecBole parity)"
            picked = "yes" if point["name"] == record["pick"] else ""
            lines.append(
                f"| {Path(folder).parent.name} | {values}{parity} | {record['grid_seed']} | "
                f"{100 * point['valid']:.2f} | {picked} |"
            )
    return "\n".join(lines)


def json_rows(groups: dict[str, dict]) -> list[dict]:
    """One row per group, protocol and metric: what the tables show, machine-readable."""
    rows = []
    for name, g in groups.items():
        other = next((p for p in PROTOCOLS if p != g["protocol"]), None)
        for key, values in sorted(g["metrics"].items()):
            if key == "epochs" or key.endswith("/users"):
                continue
            protocol = other if key.split("/")[0] in PROTOCOLS else g["protocol"]
            metric = key.split("/", 1)[1] if key.split("/")[0] in PROTOCOLS else key
            mean, std = _mean_std(values)
            rows.append(
                {
                    "dataset": g["dataset"],
                    "model": name,
                    "protocol": protocol,
                    "metric": metric,
                    "mean": round(mean, 6),
                    "std": round(std, 6),
                    "seeds": g["runs"],
                    "commit": sorted({c for c in g["commits"] if c}),
                }
            )
    return rows


def bucket_table(groups: dict[str, dict]) -> str:
    """HR@10 / NDCG@10 by the test target's training occurrences (cold 0, rare 1–4, warm ≥ 5), and
    for targets without a cover where the catalogue has covers."""
    shown = {n: g for n, g in groups.items() if "cold/users" in g["metrics"]}
    if not shown:
        return ""
    buckets = BUCKETS + ((NO_COVER,) if any(f"{NO_COVER}/users" in g["metrics"] for g in shown.values()) else ())
    head = " | ".join(f"{b} HR@10 | {b} NDCG@10" for b in buckets)
    lines = [
        "Test targets by their occurrences in all users' training parts "
        "(cold: 0, rare: 1–4, warm: ≥ 5; users per bucket in brackets)"
        + (f", and targets without a cover ({NO_COVER})" if NO_COVER in buckets else "")
        + ":",
        "",
        f"| run | seeds | {head} |",
        "|---|---|" + "---:|" * (2 * len(buckets)),
    ]
    for name, g in shown.items():
        cells = []
        for b in buckets:
            if f"{b}/users" not in g["metrics"]:
                cells += ["–", "–"]
                continue
            users = _mean_std(g["metrics"][f"{b}/users"])[0]
            for m in ("hr@10", "ndcg@10"):
                cells.append(_cell(g, f"{b}/{m}") + (f" [{users:.0f}]" if m == "hr@10" else ""))
        lines.append(f"| {name} | {', '.join(map(str, g['runs']))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def svg_lines(
    series: dict[str, list[tuple[float, float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 640,
    height: int = 360,
) -> str:
    """A line plot as SVG text: one polyline per series, axes with min/max labels, a legend (the
    plot grows taller when the legend needs it)."""
    points = [p for s in series.values() for p in s]
    if not points:
        return ""
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-3)
    left, right, top, bottom = 60, 200, 30, 40
    height = max(height, top + 14 * len(series) + bottom)
    w, h = width - left - right, height - top - bottom

    def xy(p):
        return left + (p[0] - x0) / (x1 - x0) * w, top + h - (p[1] - y0) / (y1 - y0) * h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="18" font-size="13">{title}</text>',
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + h}" stroke="black"/>',
        f'<text x="{left + w / 2}" y="{height - 8}" text-anchor="middle">{xlabel}</text>',
        f'<text x="14" y="{top + h / 2}" transform="rotate(-90 14 {top + h / 2})" text-anchor="middle">{ylabel}</text>',
        f'<text x="{left - 4}" y="{top + h}" text-anchor="end">{y0:.3g}</text>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{y1:.3g}</text>',
        f'<text x="{left}" y="{top + h + 14}" text-anchor="middle">{x0:g}</text>',
        f'<text x="{left + w}" y="{top + h + 14}" text-anchor="middle">{x1:g}</text>',
    ]
    for i, (name, s) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        if s:
            out.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="'
                + " ".join(f"{a:.1f},{b:.1f}" for a, b in map(xy, s))
                + '"/>'
            )
        out.append(
            f'<rect x="{left + w + 12}" y="{top + 14 * i}" width="10" height="3" fill="{colour}"/>'
            f'<text x="{left + w + 26}" y="{top + 14 * i + 5}">{name}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def report(
    runs: list[str],
    out: str = "docs/results.md",
    figures: str | None = None,
    title: str = "results",
    json_out: str | None = None,
) -> str:
    """Tables (mean ± std over seeds) and plots of the runs under each folder in ``runs``.

    Args:
        runs: stage folders whose ``*seed<N>/metrics.json`` are results (e.g. runs/bili_food/stage2).
        out: Markdown file; the part between the report markers is replaced (appended if absent).
        figures: folder for the SVG plots, referenced relative to ``out`` (default: ``figures/`` beside it).
        title: name of the plots' files and heading.
        json_out: a JSON file of ``{title: rows}``; this title's rows are replaced, others kept.
    """
    groups = collect([Path(r) for r in runs])
    if not groups:
        raise SystemExit(f"sicsrec report: no <variant>-seed<N>/metrics.json under {runs}")
    out_path = Path(out)
    fig_dir = Path(figures) if figures else out_path.parent / "figures"
    at_k = {
        name: [(k, 100 * _mean_std(g["metrics"].get(f"ndcg@{k}", []))[0]) for k in KS] for name, g in groups.items()
    }
    curves = {f"{name} s{seed}": c for name, g in groups.items() for seed, c in zip(g["runs"], g["curves"])}
    slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
    plots = {
        f"{slug}_ndcg_at_k.svg": svg_lines(at_k, f"{title}: test NDCG@K (×100, mean over seeds)", "K", "NDCG@K"),
        f"{slug}_valid_hr10.svg": svg_lines(curves, f"{title}: validation HR@10 per epoch", "epoch", "HR@10"),
    }
    links = []
    for name, svg in plots.items():
        if svg:
            _write(fig_dir / name, svg)
            links.append(f"![{name}]({os.path.relpath(fig_dir / name, out_path.parent)})")
    tables = [table(groups), bucket_table(groups), grid_table([Path(r) for r in runs])]
    block = "\n\n".join(
        [
            f"{BEGIN}\n### {title} (generated by `sicsrec report`; values ×100, mean ± std over seeds)",
            *[t for t in tables if t],
            " ".join(links),
            END,
        ]
    )
    text = out_path.read_text(encoding="utf-8") if out_path.is_file() else ""
    pattern = re.compile(re.escape(BEGIN) + rf"\n### {re.escape(title)} .*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    _write(out_path, text)
    if json_out:
        path = Path(json_out)
        rows = json.loads(path.read_text()) if path.is_file() else {}
        rows[title] = json_rows(groups)
        _write(path, json.dumps(rows, indent=1) + "\n")
    print("\n".join(t for t in tables[:2] if t))
    return block


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="sicsrec report", description=report.__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="stage folders holding <variant>-seed<N>/metrics.json")
    parser.add_argument("--out", default="docs/results.md")
    parser.add_argument("--figures", default=None, help="folder of the plots (default: figures/ beside --out)")
    parser.add_argument("--title", default="results")
    parser.add_argument("--json", default=None, help="also write the rows here, machine-readable (docs/results.json)")
    args = parser.parse_args(argv)
    report(args.runs, args.out, args.figures, args.title, args.json)
