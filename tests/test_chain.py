"""`sicsrec run`: the whole chain from one config folder; up-to-date steps are skipped."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from sicsrec.chain import STAMP, Chain
from tests.conftest import REPO, TINY_TEXT_ENCODER

TINY_TEXT = {"class_path": "sicsrec.content.encoders.TextEncoder", "init_args": TINY_TEXT_ENCODER}


def tiny_dataset(tmp_path: Path, root: Path) -> tuple[Path, Path]:
    """A data file for the generated data (runs under tmp_path/runs) and the shipped step configs
    with tiny models and 1–2 epochs; (data file, steps folder)."""
    steps, runs = tmp_path / "configs", tmp_path / "runs"
    steps.mkdir()
    data_file = tmp_path / "gen.yaml"
    data_file.write_text(yaml.safe_dump({"name": "gen", "root": str(root), "runs": str(runs)}))
    pairs = yaml.safe_load((REPO / "configs" / "pairs.yaml").read_text())
    pairs["judge"]["init_args"]["text"] = TINY_TEXT
    configs = {"pairs": pairs, "features": yaml.safe_load((REPO / "configs" / "features.yaml").read_text())}
    for step in ("align", "stage1", "stage2"):
        cfg = yaml.safe_load((REPO / "configs" / f"{step}.yaml").read_text())
        cfg["trainer"].update(
            max_epochs=2 if step != "align" else 1,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
        )
        cfg["trainer"]["logger"] = [cfg["trainer"]["logger"][0]]  # CSV only
        if step == "align":
            cfg["model"]["init_args"]["text"] = TINY_TEXT
            cfg["model"]["init_args"]["image"] = None  # text only: the covers' path is the quick start test's
            cfg["model"]["init_args"]["trainable"] = "all"
        else:
            cfg["data"]["init_args"]["max_len"] = 10
        if step == "stage1":
            cfg["model"]["init_args"].update(hidden_size=16, inner_size=16, num_layers=1)
        configs[step] = cfg
    for step, cfg in configs.items():
        (steps / f"{step}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return data_file, steps


CATALOGUE = """name: shop                      # a CSV catalogue: one data file and `sicsrec run`
root: {root}
reader:
  class_path: sicsrec.data.CatalogueFormat
  init_args: {{interactions: events.csv, items: products.csv, user_column: customer, item_column: sku,
              time_column: ts, item_id_column: sku, title_columns: {{en: name}}}}
text_column: en
protocol: recbole
runs: {runs}
"""


@pytest.mark.slow
def test_run_chains_every_real_step_on_a_csv_catalogue_and_then_skips_them(
    tmp_path, generated, capsys, monkeypatch, forbid_fold_in
):
    """A new dataset from a CSV catalogue is one data file and one command: each step as a user
    would run it, in its own process — pairs → align → features → stage 1 → stage 2."""
    import pandas as pd

    from sicsrec.cli import main

    monkeypatch.chdir(tmp_path)
    shop = tmp_path / "shop"
    shop.mkdir()
    events = pd.read_csv(generated / "Gen_pair.csv", header=None, names=["customer", "sku", "ts"])
    items = pd.read_csv(generated / "Gen_item.csv", header=None, names=["sku", "name_zh", "name"])
    # two products that arrive after training: one some users moved to last before their test
    # target (their validation target), one that is some users' test target
    events = events.sort_values(["customer", "ts"], kind="stable")
    customers = events["customer"].unique()
    for offset, (sku, group) in enumerate((("fresh-valid", customers[:5]), ("fresh-test", customers[5:10]))):
        for customer in group:
            events.loc[events.index[events["customer"] == customer][-2 + offset], "sku"] = sku
    items = pd.concat([items, pd.DataFrame({"sku": ["fresh-valid", "fresh-test"], "name_zh": "新", "name": "fresh"})])
    events.to_csv(shop / "events.csv", index=False)
    items.to_csv(shop / "products.csv", index=False)
    _, steps = tiny_dataset(tmp_path, generated)  # tiny encoders, 1–2 epochs
    runs = tmp_path / "runs"
    data_file = tmp_path / "shop.yaml"
    data_file.write_text(CATALOGUE.format(root=shop, runs=runs))
    assert len(data_file.read_text().splitlines()) <= 15
    main(["run", str(data_file), "--steps", str(steps), "--seeds", "[1]"])
    results = [runs / "stage1" / "seed1" / "metrics.json", runs / "stage2" / "seed1" / "metrics.json"]
    assert f"result: {results[1]}" in capsys.readouterr().out
    for path, key in zip(results, ("test/id/ndcg@10", "test/ndcg@10")):
        report = json.loads(path.read_text())
        assert report["seed"] == 1 and key in report, report
    stage2 = yaml.safe_load((runs / "stage2" / "seed1" / "stage2.run.yaml").read_text())
    assert stage2["model"]["init_args"]["stage1_checkpoint"] == str(
        runs / "stage1" / "seed1" / "checkpoints" / "best.ckpt"
    )
    assert json.loads(results[0].read_text())["dataset"] == "shop"  # read through the catalogue reader
    capsys.readouterr()
    mtimes = {p: p.stat().st_mtime for p in results}
    Chain(data_file, steps).run([1])  # nothing changed: nothing runs
    assert capsys.readouterr().out.count("up to date") == 3 + 2
    assert all(p.stat().st_mtime == t for p, t in mtimes.items())

    # the new-item rows were fitted once, after the fit, beside its checkpoint: test and recommend
    # read them and fit nothing, and test gives the fit's numbers again
    from sicsrec.checkpoints import read_new_items

    fitted = json.loads(results[1].read_text())
    best = Path(fitted["best_checkpoint"])
    assert fitted["fold_in_seconds"] is not None and set(read_new_items(best)) == {"test", "predict"}

    forbid_fold_in()
    run = runs / "stage2" / "seed1"
    main(["test", "--config", str(run / "config.yaml"), "--ckpt_path", str(best)])
    tested = json.loads((runs / "stage2" / "seed1-test" / "metrics.json").read_text())
    assert {k: v for k, v in tested.items() if k.startswith("test/")} == pytest.approx(
        {k: v for k, v in fitted.items() if k.startswith("test/")}, abs=1e-6
    )
    histories = tmp_path / "histories.jsonl"
    histories.write_text(json.dumps({"id": 1, "items": events["sku"].astype(str).tolist()[:5]}) + "\n")
    main(["recommend", "--run", str(run), "--histories", str(histories), "--out", str(tmp_path / "top.jsonl")])
    assert len(json.loads((tmp_path / "top.jsonl").read_text())["items"]) == 10
    # a torn rows file is refused, and `sicsrec fold-in` fits the same rows again
    rows, path = read_new_items(best), best.with_name("best.new_items.pt")
    path.write_bytes(b"torn")
    with pytest.raises(SystemExit):
        main(["recommend", "--run", str(run), "--histories", str(histories)])
    assert "not new-item rows" in capsys.readouterr().err
    monkeypatch.undo()
    main(["fold-in", "--run", str(run)])
    again = read_new_items(best)
    assert all(torch.equal(again[s][0], rows[s][0]) and torch.allclose(again[s][1], rows[s][1]) for s in rows)


FAKE = '''#!{python}
"""Stands in for `python -m sicsrec.cli STEP --config C`: writes the outputs the step writes (a stage
writes the seed it ran with into metrics.json) and logs the call. With {log}.kill present, the
first stage-1 fit is "killed" after writing last.ckpt."""
import json, sys, yaml
from pathlib import Path
args = sys.argv[3:]
Path("{log}").open("a").write(" ".join(args) + "\\n")
cfg = yaml.safe_load(Path(args[args.index("--config") + 1]).read_text())
if args[0] in ("pairs", "features"):
    Path(cfg["out"]).mkdir(parents=True, exist_ok=True)
    (Path(cfg["out"]) / (args[0] + (".jsonl" if args[0] == "pairs" else ".json"))).write_text("x")
    sys.exit(0)
if args[0] != "fit":
    sys.exit(0)
if cfg["model"]["class_path"].endswith("AlignModule"):
    out = Path(cfg["trainer"]["callbacks"][0]["init_args"]["dirpath"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "best.ckpt").write_text("x")
    sys.exit(0)
csv = cfg["trainer"]["logger"][0]["init_args"]
run = Path(csv["save_dir"]) / csv["name"] / csv["version"]
(run / "checkpoints").mkdir(parents=True, exist_ok=True)
(run / "checkpoints" / "last.ckpt").write_text("x")
if csv["name"] == "stage1" and "--ckpt_path" not in args and Path("{log}.kill").exists():
    Path("{log}.kill").unlink()
    sys.exit(137)
(run / "checkpoints" / "best.ckpt").write_text("x")
(run / "metrics.json").write_text(json.dumps({{"seed": cfg["seed_everything"]}}))
'''


def fake_python(tmp_path: Path, kill_first_stage1: bool = False) -> tuple[str, Path]:
    import sys

    log = tmp_path / "calls.log"
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE.format(python=sys.executable, log=log))
    fake.chmod(0o755)
    if kill_first_stage1:
        Path(f"{log}.kill").write_text("")
    return str(fake), log


def test_run_chains_seeds_skips_what_is_up_to_date_and_reruns_what_changed(tmp_path, generated, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_file, steps = tiny_dataset(tmp_path, generated)
    python, log = fake_python(tmp_path)
    results = Chain(data_file, steps, python=python).run([1, 2])
    runs = tmp_path / "runs"
    assert results == [
        runs / "stage1" / "seed1" / "metrics.json",
        runs / "stage2" / "seed1" / "metrics.json",
        runs / "stage1" / "seed2" / "metrics.json",
        runs / "stage2" / "seed2" / "metrics.json",
    ]
    for path in results:
        assert json.loads(path.read_text())["seed"] == int(path.parent.name[-1])  # each seed's own run
    stage2 = yaml.safe_load((runs / "stage2" / "seed2" / "stage2.run.yaml").read_text())
    assert stage2["model"]["init_args"]["stage1_checkpoint"] == str(
        runs / "stage1" / "seed2" / "checkpoints" / "best.ckpt"
    )
    assert len(log.read_text().splitlines()) == 3 + 4
    capsys.readouterr()

    # nothing changed: nothing runs
    Chain(data_file, steps, python=python).run([1, 2])
    assert capsys.readouterr().out.count("up to date") == 3 + 4
    assert len(log.read_text().splitlines()) == 3 + 4

    # a stage-2 ablation reruns stage 2 only, into its own folders
    overrides = {"stage2": ["model.init_args.use_decoder=false"]}
    Chain(data_file, steps, variant="no_decoder", overrides=overrides, python=python).run([1])
    out = capsys.readouterr().out
    assert "stage1 seed1: up to date" in out and "stage2 seed1: up to date" not in out
    assert (runs / "stage2" / "no_decoder-seed1" / "metrics.json").is_file()
    ablation = yaml.safe_load((runs / "stage2" / "no_decoder-seed1" / "stage2.run.yaml").read_text())
    assert ablation["model"]["init_args"]["use_decoder"] is False

    # a changed upstream config reruns it and everything after it: a new stage 1 means a new stage 2
    features = yaml.safe_load((steps / "features.yaml").read_text())
    features["batch_size"] = 64
    (steps / "features.yaml").write_text(yaml.safe_dump(features))
    calls = len(log.read_text().splitlines())
    Chain(data_file, steps, python=python).run([1])
    out = capsys.readouterr().out
    assert "pairs: up to date" in out and "align: up to date" in out
    assert [c.split()[0] for c in log.read_text().splitlines()[calls:]] == ["features", "fit", "fit"]
    assert "stage1 seed1: up to date" not in out and "stage2 seed1: up to date" not in out
    # and a changed stage-1 config alone reruns stage 1 and stage 2
    calls = len(log.read_text().splitlines())
    Chain(data_file, steps, overrides={"stage1": ["model.init_args.contrastive_weight=0.5"]}, python=python).run([1])
    assert len(log.read_text().splitlines()[calls:]) == 2
    assert "stage2 seed1: up to date" not in capsys.readouterr().out


def test_a_killed_stage_is_resumed_from_its_last_checkpoint_when_run_again(tmp_path, generated, monkeypatch):
    import pytest

    monkeypatch.chdir(tmp_path)
    data_file, steps = tiny_dataset(tmp_path, generated)
    runs = tmp_path / "runs"
    for out in (
        runs / "pairs" / "pairs.jsonl",
        runs / "align" / "checkpoints" / "best.ckpt",
        runs / "features" / "features.json",
    ):
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("x")
    python, log = fake_python(tmp_path, kill_first_stage1=True)
    chain = Chain(data_file, steps, python=python)
    with pytest.raises(SystemExit, match="stage1 seed1 failed"):
        chain.run([1], start="stage1")
    chain.run([1], start="stage1")
    calls = log.read_text().splitlines()
    assert len(calls) == 3  # stage 1 killed, stage 1 resumed, stage 2
    assert "--ckpt_path" not in calls[0]
    assert calls[1].endswith(f"--ckpt_path {runs / 'stage1' / 'seed1' / 'checkpoints' / 'last.ckpt'}")
    assert "--ckpt_path" not in calls[2]
    # a changed config does not resume the old run: it starts over
    (runs / "stage1" / "seed1" / STAMP).write_text(json.dumps({"stamp": "old", "finished": False}))
    chain.run([1], start="stage1")
    assert "--ckpt_path" not in log.read_text().splitlines()[3]


def test_a_stopped_alignment_is_resumed_from_the_last_checkpoint_in_its_checkpoint_folder(tmp_path):
    """Alignment's output is ``<align>/checkpoints/best.ckpt``, so its ``last.ckpt`` lies beside it."""
    import sys

    log = tmp_path / "calls.log"
    fake = tmp_path / "fakepython"
    fake.write_text(
        f"#!{sys.executable}\nimport sys\nfrom pathlib import Path\n"
        f"Path({str(log)!r}).open('a').write(' '.join(sys.argv[3:]) + '\\n')\n"
        f"Path({str(tmp_path / 'align' / 'checkpoints' / 'best.ckpt')!r}).write_text('x')\n"
    )
    fake.chmod(0o755)
    out_dir = tmp_path / "align" / "checkpoints"
    out_dir.mkdir(parents=True)
    (out_dir / "last.ckpt").write_text("x")
    (out_dir / STAMP).write_text(json.dumps({"stamp": "s", "finished": False}))
    steps = tmp_path / "configs"
    steps.mkdir()
    data_file = tmp_path / "d.yaml"
    data_file.write_text("name: d\nroot: data/d\n")
    Chain(data_file, steps, python=str(fake))._run(
        "align", out_dir, [out_dir / "best.ckpt"], "s", ["fit", "--config", "a.yaml"]
    )
    assert log.read_text().split() == ["fit", "--config", "a.yaml", "--ckpt_path", str(out_dir / "last.ckpt")]


@pytest.mark.parametrize(
    "given, expected",
    [(["trainer.max_epochs=1"], [("trainer.max_epochs", 1)]), (["[trainer.max_epochs=1, x.y=a]"], None)],
)
def test_run_overrides_take_one_key_value_or_a_list(tmp_path, monkeypatch, given, expected):
    """`sicsrec run DATA --align trainer.max_epochs=1`, the form `--help` suggests, as well as a list."""
    from sicsrec.cli import main

    seen = {}
    monkeypatch.setattr(Chain, "run", lambda self, seeds, until, start: seen.update(self.overrides) or [])
    data_file = tmp_path / "gen.yaml"
    data_file.write_text(yaml.safe_dump({"name": "gen", "root": str(tmp_path)}))
    main(["run", str(data_file), "--align", *given])
    assert seen["align"] == (expected or [("trainer.max_epochs", 1), ("x.y", "a")])
    assert seen["stage2"] == []


@pytest.mark.slow
def test_the_quick_start_chain_runs_both_modalities_and_ends_with_the_comparison_table(tmp_path, generated, capsys):
    """`make quickstart`'s commands, on the quick start's step configs made smaller still (tiny
    encoders, two epochs): pairs → alignment of a text *and* an image encoder → features of both →
    stage 1 → stage 2, the ID encoder tuned beside it, and the table comparing them."""
    from sicsrec.cli import main

    steps, runs = tmp_path / "steps", tmp_path / "runs"
    steps.mkdir()
    csv_only = lambda step: {"logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {}}]}  # noqa: E731
    small = {"trainer": {"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False}}
    shape = {"model": {"init_args": {"hidden_size": 16, "inner_size": 16, "num_layers": 1}}}
    image = {"class_path": "sicsrec.content.encoders.ImageEncoder"}
    image["init_args"] = {"random_init": True, "image_size": 32}
    overlays = {
        "pairs": {"judge": {"init_args": {"text": TINY_TEXT}}},
        "align": {"model": {"init_args": {"text": TINY_TEXT, "image": image, "trainable": "all"}}},
        "features": {},
        "stage1": shape,
        "stage2": {},
        "id": shape,
    }
    for step, overlay in overlays.items():
        config = {"base": str(REPO / "configs" / "quickstart" / f"{step}.yaml"), **overlay}
        if step not in ("pairs", "features"):
            config["trainer"] = {**small["trainer"], **csv_only(step)}
        (steps / f"{step}.yaml").write_text(yaml.safe_dump(config))
    data_file = tmp_path / "quickstart.yaml"
    quick = yaml.safe_load((REPO / "configs" / "data" / "quickstart.yaml").read_text())
    data_file.write_text(yaml.safe_dump({**quick, "root": str(generated), "runs": str(runs)}))
    main(["run", str(data_file), "--steps", str(steps), "--seeds", "[1]", "--one_process", "true"])
    main(["tune", str(data_file), "--steps", str(steps), "--seeds", "[1]", "--one_process", "true",
          "--grid", "{model.init_args.item_dropout: [0.0, 0.5]}"])  # fmt: skip
    capsys.readouterr()
    out = tmp_path / "results.md"
    main(["report", str(runs / "id"), str(runs / "stage2"), "--out", str(out), "--figures", str(tmp_path / "fig")])
    printed = capsys.readouterr().out
    aligned = torch.load(runs / "align" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert aligned["hyper_parameters"]["image"] is not None and aligned["hyper_parameters"]["text"] is not None
    features = json.loads((runs / "features" / "features.json").read_text())
    assert features["text"]["items_with_features"] > 0 and features["image"]["items_with_features"] > 0
    rows = [line for line in printed.splitlines() if line.startswith("| runs/")]
    assert any(r.startswith("| runs/id tuned") for r in rows) and any(r.startswith("| runs/stage2 |") for r in rows)
    main_rows = [r for r in rows if "ninerec" in r]
    assert len(main_rows) == 2 and all("recbole: " in r for r in main_rows)  # masked, and not masked beside it
    assert "cold HR@10" in printed and "warm HR@10" in printed
