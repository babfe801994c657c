"""`sicsrec tune`: the ID encoder's grid is picked on validation, never on test."""

import json
from pathlib import Path

import pytest
import yaml

from sicsrec.chain import Chain
from sicsrec.cli import main
from sicsrec.tune import DEFAULT_GRID, choose, grid_points, point_name, tune
from tests.conftest import REPO

# Made-up validation HR@10 per grid point (item dropout, dropout) and test HR@10 that ranks them the
# other way round: a pick that read test scores would be (0.0, 0.2).
VALID = {(0.0, 0.2): 0.20, (0.0, 0.5): 0.22, (0.2, 0.2): 0.21, (0.2, 0.5): 0.25, (0.5, 0.2): 0.24, (0.5, 0.5): 0.23}
TEST = {point: 1.0 - score for point, score in VALID.items()}


def test_choose_takes_the_best_score_and_the_first_of_equals():
    assert choose({"a": 0.1, "b": 0.3, "c": 0.2}) == "b"
    assert choose({"a": 0.3, "b": 0.3, "c": 0.2}) == "a"
    assert choose({"": 0.1, "x": 0.05}) == ""


def test_the_default_grid_holds_the_recbole_parity_point_under_its_own_name():
    config = yaml.safe_load((REPO / "configs" / "id.yaml").read_text())
    points = grid_points(DEFAULT_GRID)
    assert len(points) == 6
    names = [point_name(p, config) for p in points]
    assert names.count("") == 1  # id.yaml as shipped: item dropout 0, dropout 0.5
    assert points[names.index("")] == {"model.init_args.item_dropout": 0.0, "model.init_args.dropout": 0.5}
    assert "item_dropout0.5-dropout0.2" in names and len(set(names)) == 6


@pytest.fixture
def fake_fits(tmp_path, monkeypatch):
    """Each fit writes a metrics.json with the made-up scores of its grid point; the fits are logged."""
    fits = []

    def fit(self, step, seed, upstream, version=None, overrides=None):
        config = self.stage_config(step, seed, version)
        for key, value in (overrides or {}).items():
            node = config
            *path, last = key.split(".")
            for part in path:
                node = node[part]
            node[last] = value
        args = config["model"]["init_args"]
        point = (args["item_dropout"], args["dropout"])
        out = self.dataset.run_dir(step, version) / "metrics.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"best_valid": VALID[point], "test/hr@10": TEST[point], "seed": seed}))
        fits.append((version, point))
        return out

    monkeypatch.setattr(Chain, "fit", fit)
    data_file = tmp_path / "shop.yaml"
    data_file.write_text(yaml.safe_dump({"name": "shop", "root": str(tmp_path), "runs": str(tmp_path / "runs")}))
    return data_file, fits


def test_tune_picks_the_best_validation_score_and_fits_it_and_the_parity_point_at_every_seed(fake_fits, capsys):
    data_file, fits = fake_fits
    main(["tune", str(data_file), "--seeds", "[7,8]", "--steps", str(REPO / "configs")])
    record = json.loads((data_file.parent / "runs" / "id" / "tune.json").read_text())
    assert record["pick"] == "item_dropout0.2-dropout0.5"
    assert record["pick_overrides"] == {"model.init_args.item_dropout": 0.2, "model.init_args.dropout": 0.5}
    assert record["monitor"] == "valid/hr@10" and record["grid_seed"] == 7
    assert sorted(p["valid"] for p in record["points"]) == sorted(VALID.values())
    grid = [version for version, _ in fits if version.endswith("seed7")]
    assert len(grid) == 6 and "seed7" in grid  # the parity point runs in id.yaml's own folder
    assert [v for v, _ in fits if v.endswith("seed8")] == ["item_dropout0.2-dropout0.5-seed8", "seed8"]
    assert "<- pick" in capsys.readouterr().out


def test_test_scores_never_enter_the_choice(fake_fits):
    data_file, _ = fake_fits
    first = tune(str(data_file), seeds=[7], steps=str(REPO / "configs"))
    for point in TEST:  # the test scores turned upside down: the pick stays
        TEST[point] = 1.0 - TEST[point]
    try:
        again = tune(str(data_file), seeds=[7], steps=str(REPO / "configs"))
    finally:
        for point in TEST:
            TEST[point] = 1.0 - TEST[point]
    assert first["pick"] == again["pick"] == "item_dropout0.2-dropout0.5"


def test_a_tied_grid_keeps_the_first_point_and_one_seed_fits_only_the_grid(fake_fits, monkeypatch):
    data_file, fits = fake_fits
    monkeypatch.setitem(VALID, (0.0, 0.5), 0.25)  # level with (0.2, 0.5), and before it in the grid
    record = tune(str(data_file), seeds=[1], steps=str(REPO / "configs"))
    assert record["pick"] == "" and record["pick_overrides"] == {
        "model.init_args.item_dropout": 0.0,
        "model.init_args.dropout": 0.5,
    }
    assert len(fits) == 6


def test_a_grid_that_is_not_a_list_of_values_is_one_line(fake_fits, capsys):
    data_file, _ = fake_fits
    with pytest.raises(SystemExit):
        main(["tune", str(data_file), "--grid", '{"model.init_args.dropout": []}'])
    assert "grid model.init_args.dropout: expected a non-empty list" in capsys.readouterr().err


@pytest.mark.slow
def test_tune_fits_the_grid_for_real_and_records_what_each_run_validated(tmp_path, generated, monkeypatch):
    """Two grid points on generated data, each a real `sicsrec fit` (in this process: no start-up each)."""
    monkeypatch.chdir(tmp_path)
    steps = tmp_path / "configs"
    steps.mkdir()
    config = yaml.safe_load((REPO / "configs" / "id.yaml").read_text())
    config["trainer"].update(max_epochs=2, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    config["trainer"]["logger"] = [config["trainer"]["logger"][0]]  # CSV only
    config["model"]["init_args"].update(hidden_size=16, inner_size=16, num_layers=1)
    config["data"]["init_args"]["max_len"] = 10
    (steps / "id.yaml").write_text(yaml.safe_dump(config))
    data_file = tmp_path / "gen.yaml"
    data_file.write_text(yaml.safe_dump({"name": "gen", "root": str(generated), "runs": str(tmp_path / "runs")}))
    grid = {"model.init_args.item_dropout": [0.0, 0.5]}
    record = tune(str(data_file), seeds=[1], grid=grid, steps=str(steps), one_process=True)
    runs = tmp_path / "runs" / "id"
    for name, folder in (("", "seed1"), ("item_dropout0.5", "item_dropout0.5-seed1")):
        metrics = json.loads((runs / folder / "metrics.json").read_text())
        assert [p["valid"] for p in record["points"] if p["name"] == name] == [metrics["best_valid"]]
        assert "test/hr@10" in metrics and (runs / folder / "checkpoints" / "best.ckpt").is_file()
    assert Path(runs / "tune.json").is_file()
