"""``sicsrec tune DATA_FILE``: the ID encoder tuned on validation, the yardstick every "×" divides by.

A comparison that gives one side a tuning budget and not the other is not a result: SICSRec's own
ID encoder trains with item dropout, SASRec at RecBole parity (``configs/id.yaml``) with none, and
which regulariser helps depends on the catalogue. So each dataset gets a small grid of
``configs/id.yaml``, fitted at the first seed; the point whose early-stopped checkpoint has the best
validation score (the checkpoint callback's monitor, ``valid/hr@10``) is the pick. Each run also
writes its test metrics, but nothing here reads them. The pick and the config's own point (the
RecBole-parity baseline) are then fitted at every other seed.

Runs land where ``sicsrec fit --config configs/id.yaml --dataset DATA_FILE --variant NAME`` puts
them: ``runs/<name>/id/<point>-seed<N>``, the config's own point in ``runs/<name>/id/seed<N>``.
Finished runs are skipped (the same stamps as ``sicsrec run``); ``runs/<name>/id/tune.json`` records
every point's validation score, the pick and its overrides (name ``""``: the config as it is).
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

from sicsrec.chain import Chain
from sicsrec.errors import ConfigError
from sicsrec.io import write_json_atomic

STEP = "id"
# Item dropout (SICSRec's ID regulariser, 0.5 in stage 1) × hidden dropout.
DEFAULT_GRID = {"model.init_args.item_dropout": [0.0, 0.2, 0.5], "model.init_args.dropout": [0.2, 0.5]}


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in the grid's order (the last key varies fastest)."""
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid {key}: expected a non-empty list of values, got {values!r}")
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _get(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def point_name(point: dict, config: dict) -> str:
    """A grid point's run name: its values by their last key (``item_dropout0.5-dropout0.2``); ``""``
    for the point that changes nothing of ``config`` (its runs are the config's own ``seed<N>``)."""
    if all(_get(config, key) == value for key, value in point.items()):
        return ""
    return "-".join(f"{key.rsplit('.', 1)[-1]}{value:g}" for key, value in point.items())


def run_version(name: str, seed: int) -> str:
    """A grid point's run folder name at ``seed`` (the config's own point: ``seed<N>``)."""
    return f"{name}-seed{seed}" if name else f"seed{seed}"


def choose(scores: dict[str, float]) -> str:
    """The name with the highest validation score; the first of equals (the grid's order)."""
    return max(scores, key=lambda name: (scores[name], -list(scores).index(name)))


def validation_score(metrics_file: Path) -> float:
    """The best validation score a fit recorded (its checkpoint's monitor); never a test metric."""
    score = json.loads(metrics_file.read_text()).get("best_valid")
    if score is None:
        raise ConfigError(f"{metrics_file}: no best_valid (a fit without a monitored checkpoint cannot be picked)")
    return float(score)


def tune(
    data_file: str,
    seeds: list[int] | None = None,
    grid: dict[str, list] | None = None,
    steps: str = "configs",
    one_process: bool = False,
) -> dict:
    """Tune the ID encoder (``configs/id.yaml``) on a dataset's validation split and fit the pick.

    Args:
        data_file: the dataset's data file, e.g. configs/data/bili_food.yaml.
        seeds: the grid runs at the first; the pick and the RecBole-parity point (id.yaml as it is)
            at every one (default: id.yaml's seed_everything).
        grid: dotted config keys → values to try (default: item dropout {0, 0.2, 0.5} × dropout {0.2, 0.5}).
        steps: folder of the step configs (id.yaml).
        one_process: every fit in this process, without the start-up of a process per fit.
    """
    chain = Chain(data_file, steps, python=None if one_process else sys.executable)
    config = chain.load(STEP)
    seeds = seeds or [int(config.get("seed_everything") or 2024)]
    points = grid_points(grid or DEFAULT_GRID)
    names = [point_name(point, config) for point in points]
    scores = {}
    for name, point in zip(names, points):
        scores[name] = validation_score(chain.fit(STEP, seeds[0], None, run_version(name, seeds[0]), point))
    pick = choose(scores)
    for seed in seeds[1:]:
        for name in dict.fromkeys([pick, ""]):  # the pick, then the parity point (once if they are one)
            chain.fit(STEP, seed, None, run_version(name, seed), points[names.index(name)] if name in names else {})
    monitor = next(
        (
            c.get("init_args", {}).get("monitor")
            for c in config.get("trainer", {}).get("callbacks") or []
            if c.get("class_path", "").endswith("ModelCheckpoint")
        ),
        None,
    )
    record = {
        "dataset": chain.dataset.name,
        "config": str(chain.steps / f"{STEP}.yaml"),
        "monitor": monitor,
        "grid_seed": seeds[0],
        "seeds": seeds,
        "points": [  # name "": the config as it is (SASRec at RecBole parity), in runs seed<N>
            {"name": name, "run": run_version(name, seeds[0]), "overrides": point, "valid": scores[name]}
            for name, point in zip(names, points)
        ],
        "pick": pick,
        "pick_overrides": points[names.index(pick)],
    }
    out = chain.dataset.run_folder / STEP / "tune.json"
    write_json_atomic(out, record)
    print(f"[sicsrec tune] validation {monitor} at seed {seeds[0]}:")
    for name, point in zip(names, points):
        mark = "  <- pick" if name == pick else ""
        values = ", ".join(f"{key.rsplit('.', 1)[-1]}={value:g}" for key, value in point.items())
        print(f"  {values}: {scores[name]:.4f}{mark}")
    print(f"[sicsrec tune] written {out}")
    return record
