"""The `sicsrec` command, called in-process."""

import json
from pathlib import Path

import pytest
import yaml

from sicsrec.cli import main
from tests.conftest import REPO

BILI_FOOD = REPO / "configs" / "data" / "bili_food.yaml"


def tiny_config(tmp_path: Path, root: Path) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "id_generated.yaml").read_text())
    cfg["trainer"].update(max_epochs=2, enable_progress_bar=False, enable_model_summary=False)
    cfg["trainer"]["logger"] = cfg["trainer"]["logger"][0]  # CSV only: W&B has its own test
    cfg["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    cfg["data"]["init_args"].update(root=str(root), generate_if_missing=False)
    cfg["model"]["init_args"].update(hidden_size=16, inner_size=16)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def print_config(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    assert exit_.value.code in (0, None)
    return capsys.readouterr().out


def test_print_config_round_trips_and_fit_uses_linked_values(tmp_path, capsys, generated):
    first = print_config(capsys, "--config", str(tiny_config(tmp_path, generated)))
    printed = tmp_path / "printed.yaml"
    printed.write_text(first)
    main(["fit", "--config", str(printed)])
    out = capsys.readouterr().out
    assert "test metrics" in out
    second = print_config(capsys, "--config", str(printed))
    assert first == second
    assert "num_items: null" in first  # taken from the data, never a stale number in a file
    report = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    hparams = yaml.safe_load(next((tmp_path / "runs").rglob("hparams.yaml")).read_text())
    assert hparams["num_items"] == 120 and hparams["max_len"] == 20
    for key in ("test/ndcg@10", "test/hr@5", "test/mrr", "seed", "data_key", "versions", "git_commit"):
        assert key in report
    assert report["seed"] == 2024 and report["epochs"] == 2
    # the reported numbers are the best checkpoint's, recomputed here outside Lightning
    from sicsrec.data import SequenceDataModule
    from sicsrec.evaluation import evaluate
    from sicsrec.modules import Stage1Module

    model = Stage1Module.load_from_checkpoint(report["best_checkpoint"], weights_only=True).eval()
    dm = SequenceDataModule(str(generated), max_len=20)
    dm.setup("test")
    again = evaluate(model.score, dm.test_dataloader())
    assert report["test/ndcg@10"] == pytest.approx(again["ndcg@10"], abs=1e-6)
    assert report["test/hr@5"] == pytest.approx(again["hr@5"], abs=1e-6)


def test_num_items_contradicting_the_data_is_an_error_not_silently_overridden(tmp_path, capsys, generated):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(tiny_config(tmp_path, generated)), "--model.init_args.num_items", "7"])
    assert exit_.value.code == 2
    assert "model.num_items is 7 but the data gives 120" in capsys.readouterr().err


def test_top_level_optimizer_key_is_rejected(tmp_path, capsys, generated):
    """LightningCLI's top-level `optimizer:` would silently replace configure_optimizers."""
    path = tiny_config(tmp_path, generated)
    cfg = yaml.safe_load(path.read_text())
    cfg["optimizer"] = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}}
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(path)])
    assert exit_.value.code != 0
    assert "optimizer" in capsys.readouterr().err


def test_data_generate_prepare_stats(tmp_path, capsys):
    out = tmp_path / "G"
    main(["data", "generate", "--out", str(out), "--users", "50", "--items", "20", "--seed", "4"])
    assert (out / "Gen_item.csv").is_file() and len(list((out / "Gen_cover").glob("*.jpg"))) == 20
    main(["data", "prepare", "--root", str(out)])
    text = capsys.readouterr().out
    interactions = len((out / "Gen_pair.csv").read_text().splitlines())
    assert stats_lines(text)["users"] == "50", text
    main(["data", "stats", "--root", str(out)])
    text = capsys.readouterr().out
    assert stats_lines(text)["users"] == "50" and stats_lines(text)["interactions"] == f"{interactions:,}", text


def stats_lines(text: str) -> dict[str, str]:
    """``  name  value`` lines of a statistics printout."""
    return dict(line.split(None, 1) for line in text.splitlines() if line.startswith("  ") and line.split())


def test_bad_data_is_one_clear_line_not_a_traceback(tmp_path, capsys):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "X_item.csv").write_text("0,a,A\n")
    (root / "sequential_data.txt").write_text("0 0 zz\n")
    with pytest.raises(SystemExit) as exit_:
        main(["data", "prepare", "--root", str(root)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "sequential_data.txt:1" in err and "'zz'" in err and "Traceback" not in err


def test_predict_writes_top_k_in_original_ids_without_seen_items(tmp_path, capsys, generated):
    config = tiny_config(tmp_path, generated)
    main(["fit", "--config", str(config)])
    ckpt = next((tmp_path / "runs").rglob("best*.ckpt"))
    out = tmp_path / "pred.jsonl"
    main(
        [
            "predict",
            "--config",
            str(config),
            "--ckpt_path",
            str(ckpt),
            "--predictions.path",
            str(out),
            "--predictions.top_k",
            "5",
        ]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    from sicsrec.data.formats import NineRecFormat

    raw = NineRecFormat().read(generated)
    history = dict(zip(raw.user_ids, raw.sequences))
    assert {r["user"] for r in rows} == set(history)
    for r in rows:
        assert len(r["items"]) == 5 and r["scores"] == sorted(r["scores"], reverse=True)
        assert all(i.startswith("v") for i in r["items"])  # original ids, not internal ones
        assert not set(r["items"]) & set(history[r["user"]])
    # each row is the model's own top 5 for the user's whole sequence (its last max_len = 20 items),
    # rebuilt here from the raw file
    import torch

    from sicsrec.data import prepare
    from sicsrec.data.batching import pad
    from sicsrec.modules import Stage1Module

    model = Stage1Module.load_from_checkpoint(ckpt, weights_only=True).eval()
    item_ids = prepare(generated).item_ids
    internal = {item: i + 1 for i, item in enumerate(item_ids)}
    users = sorted(history)[:100]
    inputs = pad([[internal[i] for i in history[u][-20:]] for u in users])
    with torch.no_grad():
        scores = model.score({"input": inputs})
    for user, row in zip(users, scores):
        row[0] = float("-inf")
        row[[internal[i] for i in history[user]]] = float("-inf")
        expected = [item_ids[i - 1] for i in row.topk(5).indices.tolist()]
        assert next(r for r in rows if r["user"] == user)["items"] == expected, user

    # recommend: the same top 5 for each user's whole sequence given in original ids; unknown ids
    # are reported and skipped, never ranked as padding
    run = ckpt.parent.parent
    asked = sorted(history)[:40]
    histories = tmp_path / "histories.jsonl"
    lines = [{"id": u, "items": history[u]} for u in asked]
    lines += [{"id": "noisy", "items": ["nope", *history[asked[0]], "nada"]}, {"id": "none", "items": ["nope"]}]
    histories.write_text("".join(json.dumps(line) + "\n" for line in lines))
    served = tmp_path / "served.jsonl"
    capsys.readouterr()
    main(
        [
            "recommend",
            "--run",
            str(run),
            "--histories",
            str(histories),
            "--out",
            str(served),
            "--top_k",
            "5",
            "--with_vectors",
            "true",
        ]
    )
    err = capsys.readouterr().err
    assert "history noisy: 2 id(s) not in the catalogue, skipped: nope, nada" in err
    assert "history none: 1 id(s) not in the catalogue, skipped: nope (no known item left" in err
    answers = {r["id"]: r for r in map(json.loads, served.read_text().splitlines())}
    predicted = {r["user"]: r for r in rows}
    for user in asked:
        assert answers[user]["items"] == predicted[user]["items"], user
        assert answers[user]["scores"] == pytest.approx(predicted[user]["scores"], abs=1e-5)
        assert "unknown" not in answers[user]
    assert answers["noisy"]["items"] == predicted[asked[0]]["items"]
    assert answers["noisy"]["unknown"] == ["nope", "nada"]
    assert answers["none"]["items"] == [] and answers["none"]["unknown"] == ["nope"]
    # export: exact search of the user vectors over the exported item vectors gives the same top 5
    import numpy as np

    main(["export", "--run", str(run), "--out", str(tmp_path / "export")])
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    vectors = np.load(tmp_path / "export" / manifest["vectors"])
    assert manifest["scoring"] == "dot" and vectors.shape == (manifest["count"], manifest["dimension"])
    assert manifest["count"] == len(item_ids) and manifest["item_ids"] == item_ids
    column = {item: k for k, item in enumerate(manifest["item_ids"])}
    for user in asked:
        found = vectors @ np.asarray(answers[user]["vector"], dtype=np.float32)
        found[[column[i] for i in history[user]]] = -np.inf
        assert [manifest["item_ids"][k] for k in np.argsort(-found, kind="stable")[:5]] == answers[user]["items"]


@pytest.mark.slow
def test_a_fit_whose_output_is_not_a_terminal_prints_a_line_per_epoch_and_none_of_the_known_noise(tmp_path, generated):
    import re
    import subprocess
    import sys

    cfg = yaml.safe_load((REPO / "configs" / "id_generated.yaml").read_text())
    cfg["trainer"].update(max_epochs=2, enable_progress_bar=True)  # as shipped, with W&B
    cfg["trainer"]["logger"][0]["init_args"]["save_dir"] = str(tmp_path / "runs")
    cfg["trainer"]["logger"][1]["init_args"]["save_dir"] = str(tmp_path / "runs" / "wandb")
    cfg["data"]["init_args"].update(root=str(generated), generate_if_missing=False)
    cfg["model"]["init_args"].update(hidden_size=16, inner_size=16)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    done = subprocess.run(
        [sys.executable, "-m", "sicsrec.cli", "fit", "--config", "tiny.yaml"],
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    epochs = re.findall(r"^epoch (\d)/2  train/loss \d+\.\d{4}  valid/hr@10 0\.\d{4}  \d+\.\d s$", done.stdout, re.M)
    assert epochs == ["1", "2"], done.stdout
    known = ("litlogger", "anonymous setting", "git root", "LeafSpec", "log_every_n_steps", "args parameter")
    for noise in (*known, "Traceback"):
        assert noise not in out, noise
    assert "test metrics (×100)" in done.stdout and "metrics written to" in done.stdout


def test_recommend_names_a_bad_histories_line_and_a_run_it_cannot_read(tmp_path, capsys):
    histories = tmp_path / "histories.jsonl"
    for text, expected in (
        ('{"items": ["a"]}\nnot json\n', "histories.jsonl:2: not JSON (Expecting value)"),
        (
            '{"items": ["a"]}\n\n{"id": 3, "items": "a b"}\n',
            'histories.jsonl:3: expected an object with an "items" list',
        ),
    ):
        histories.write_text(text)
        with pytest.raises(SystemExit) as exit_:
            main(["recommend", "--run", str(tmp_path), "--histories", str(histories)])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    histories.write_text('{"items": ["a"]}\n')
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for missing, expected in (
        (True, "neither a run folder with a config.yaml nor a config file"),
        (False, "2 best*.ckpt files in"),
    ):
        if not missing:
            (run / "config.yaml").write_text("model: {}\n")
            for name in ("best-epoch=1.ckpt", "best-epoch=2.ckpt"):
                (run / "checkpoints" / name).write_bytes(b"")
        with pytest.raises(SystemExit):
            main(["recommend", "--run", str(run), "--histories", str(histories)])
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err


def effective_class_spec(spec: dict | None) -> tuple | None:
    """An optimiser's or scheduler's ``{class_path, init_args}`` with the class's own defaults filled in."""
    import importlib
    import inspect

    if spec is None:
        return None
    module, _, name = spec["class_path"].rpartition(".")
    parameters = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
    defaults = {k: p.default for k, p in parameters.items() if k not in ("self", "params", "optimizer")}
    return spec["class_path"], {**defaults, **spec.get("init_args", {})}


def test_the_code_defaults_are_what_the_shipped_stage_configs_use():
    """A module built in Python is the shipped model: every knob a shipped stage config sets equals
    the code's default, except what a config says it switches off."""
    import inspect

    from sicsrec.modules import AlignModule, Stage1Module, Stage2Module

    switches = {"id.yaml": {"use_content", "item_dropout"}}  # the ID encoder alone, as SASRec: no item dropout
    not_knobs = {"stage1_checkpoint", "text", "image"}  # a path and networks: the config must name them
    for name, module in (
        ("stage1.yaml", Stage1Module),
        ("id.yaml", Stage1Module),
        ("stage2.yaml", Stage2Module),
        ("align.yaml", AlignModule),
    ):
        given = yaml.safe_load((REPO / "configs" / name).read_text())["model"]["init_args"]
        defaults = {k: p.default for k, p in inspect.signature(module.__init__).parameters.items()}
        for key, value in given.items():
            default = defaults[key]
            if key in not_knobs:
                continue
            if key in switches.get(name, set()):
                assert value != default, (name, key)  # a switch that switches nothing is noise
                continue
            if key in ("optimizer", "scheduler"):  # compared with the class's own defaults filled in
                assert effective_class_spec(value) == effective_class_spec(default), (name, key)
                continue
            assert (list(default) if isinstance(default, tuple) else default) == value, (name, key)


@pytest.mark.parametrize(
    "argument, expected",
    [
        (
            "--model.init_args.hiden_size=3",
            "unknown key model.init_args.hiden_size for Stage1Module; did you mean model.init_args.hidden_size?",
        ),
        ("--model.init_args.alpha1=0.5", "model.init_args.alpha1 is now model.init_args.contrastive_weight"),
        ("--model.init_args.temperature=2", "model.init_args.temperature is now model.init_args.id_temperature"),
        ("--trainer.max_epocs=3", "unknown key trainer.max_epocs; did you mean trainer.max_epochs?"),
        ("--dat.init_args.root=x", "unknown key dat.init_args.root; did you mean data?"),
        ("--model.init_args.hidden_size=big", "model.init_args.hidden_size: expected int, got 'big'"),
        ("--optimizer=torch.optim.SGD", "unknown key optimizer: optimisers and schedulers are model arguments"),
    ],
)
def test_an_unknown_or_renamed_config_key_is_one_line_naming_the_right_key(argument, expected, capsys, generated):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(REPO / "configs" / "id_generated.yaml"), argument])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == f"sicsrec: error: {expected}" or (err.startswith("sicsrec: error: ") and expected in err), err
    assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    "key, expected",
    [
        ("use_contrastive", "model.init_args.use_contrastive was removed from Stage2Module: set contrastive_weight: 0"),
        ("item_content", "was removed from Stage2Module: items carry their content in the stage-1 ID encoder"),
    ],
)
def test_a_removed_stage2_key_in_a_config_file_says_what_to_do_instead(key, expected, tmp_path, capsys):
    cfg = yaml.safe_load((REPO / "configs" / "stage2.yaml").read_text())
    cfg["model"]["init_args"][key] = False
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(tmp_path / "old.yaml"), "--dataset", str(BILI_FOOD)])
    err = capsys.readouterr().err.strip()
    assert err.startswith("sicsrec: error: ") and expected in err and len(err.splitlines()) == 1, err


def test_a_renamed_key_in_a_stage2_config_file_names_the_new_key(tmp_path, capsys):
    cfg = yaml.safe_load((REPO / "configs" / "stage2.yaml").read_text())
    cfg["model"]["init_args"]["alpha"] = cfg["model"]["init_args"].pop("contrastive_weight")
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(tmp_path / "old.yaml"), "--dataset", str(BILI_FOOD)])
    err = capsys.readouterr().err.strip()
    assert err.startswith("sicsrec: error: model.init_args.alpha is now model.init_args.contrastive_weight"), err
    assert len(err.splitlines()) == 1


def test_data_root_points_a_config_at_another_folder(capsys):
    printed = print_config(
        capsys, "--config", str(REPO / "configs" / "id.yaml"), "--dataset", str(BILI_FOOD), "--data.root", "/elsewhere"
    )
    assert yaml.safe_load(printed)["data"]["init_args"]["root"] == "/elsewhere"  # a flag after --config wins


def test_metrics_table_shows_each_stage1_view():
    from sicsrec.cli import format_metrics_table

    metrics = {
        "test/hr@10": 0.5,
        **{
            f"test/{v}/{m}@{k}": 0.1 * (i + 1)
            for i, v in enumerate(("id", "content"))
            for m in ("hr", "ndcg")
            for k in (5, 10)
        },
        "test/id/mrr": 0.05,
        "test/content/mrr": 0.06,
        **{f"test/id/{b}/hr@10": 0.01 * (i + 1) for i, b in enumerate(("cold", "rare", "warm"))},
        **{f"test/id/{b}/ndcg@10": 0.005 * (i + 1) for i, b in enumerate(("cold", "rare", "warm"))},
        **{f"test/id/{b}/users": 10.0 * (i + 1) for i, b in enumerate(("cold", "rare", "warm"))},
    }
    table = format_metrics_table(metrics)
    assert "id HR" in table and "content NDCG" in table and "nan" not in table and "cold HR" not in table
    assert table.splitlines()[3].split() == ["10", "20.00", "20.00", "10.00", "10.00"]
    assert table.splitlines()[-1].endswith(
        "cold 1.00 / 0.50 (10 users), rare 2.00 / 1.00 (20 users), warm 3.00 / 1.50 (30 users)"
    )
    from sicsrec.cli import metrics_rows

    assert not {row[0] for row in metrics_rows(metrics)} & {"cold", "rare", "warm"}  # buckets are not views


@pytest.mark.parametrize("config", sorted(str(p.relative_to(REPO)) for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_parses(config, capsys):
    """Each step config, for a dataset (id_generated.yaml names its own data)."""
    text = (REPO / config).read_text()
    for line in text.splitlines():  # YAML keeps the last of two equal keys silently: refuse it here
        if "{" in line and "}" in line:
            inner = line[line.index("{") + 1 : line.rindex("}")]
            keys = [part.split(":")[0].strip() for part in inner.split(",") if ":" in part]
            assert len(keys) == len(set(keys)), f"{config}: repeated key in {line.strip()}"
    step = Path(config).stem.split("_")[0]  # features_raw.yaml is a features config
    command = [step] if step in ("pairs", "features") else ["fit"]
    dataset = [] if Path(config).stem == "id_generated" else ["--dataset", str(BILI_FOOD)]
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--config", str(REPO / config), *dataset, "--print_config"])
    assert exit_.value.code in (0, None)
    printed = capsys.readouterr().out
    assert printed.strip() and "{" + "run}" not in printed and "{" + "seed}" not in printed  # all resolved
    if dataset:
        assert "runs/bili_food" in printed and "../shared/data/ninerec/Bili_Food" in printed


def test_a_ckpt_path_that_is_no_checkpoint_or_another_stages_is_one_line(tmp_path, capsys, generated):
    import torch

    config = str(tiny_config(tmp_path, generated))
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    other = tmp_path / "s2.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "sicsrec.modules.Stage2Module"}}, other)
    for path, message in (
        (text, "notes.ckpt: not a checkpoint (UnpicklingError)"),
        (other, "s2.ckpt is a Stage2Module checkpoint, but the config builds a Stage1Module"),
        (tmp_path / "missing.ckpt", "missing.ckpt: no such checkpoint file"),
    ):
        for command in ("test", "predict"):
            with pytest.raises(SystemExit) as exit_:
                main([command, "--config", config, "--ckpt_path", str(path)])
            assert exit_.value.code == 2
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_test_with_a_checkpoint_uses_the_protocol_the_command_line_asks_for(tmp_path, capsys, generated):
    """LightningCLI would lay the checkpoint's saved arguments over the command line's."""
    config = str(tiny_config(tmp_path, generated))
    main(["fit", "--config", config])
    fitted = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    main(
        ["test", "--config", config, "--ckpt_path", fitted["best_checkpoint"], "--model.init_args.protocol", "ninerec"]
    )
    run = tmp_path / "runs" / "id"
    assert sorted(p.name for p in run.iterdir()) == ["seed2024", "seed2024-test"]  # beside the fit, not over it
    assert json.loads((run / "seed2024" / "metrics.json").read_text()) == fitted
    tested = json.loads((run / "seed2024-test" / "metrics.json").read_text())
    from sicsrec.data import SequenceDataModule
    from sicsrec.evaluation import evaluate
    from sicsrec.modules import Stage1Module

    model = Stage1Module.load_from_checkpoint(fitted["best_checkpoint"], weights_only=True).eval()
    dm = SequenceDataModule(str(generated), max_len=20)
    dm.setup("test")
    ninerec = evaluate(model.score, dm.test_dataloader(), protocol="ninerec")
    assert tested["test/mrr"] == pytest.approx(ninerec["mrr"], abs=1e-6)
    assert tested["test/mrr"] > fitted["test/mrr"]  # the history is masked: not the recbole numbers again


def test_a_second_fit_into_a_seeds_folder_replaces_its_checkpoints(tmp_path, capsys, generated):
    """Runs are named by seed: a rerun (a changed config, `sicsrec run` after a change) must leave
    that seed's checkpoints, not a stale best.ckpt beside a best-v1.ckpt."""
    import torch

    config = str(tiny_config(tmp_path, generated))
    main(["fit", "--config", config, "--test_after_fit", "false"])
    main(["fit", "--config", config, "--model.init_args.hidden_size", "8", "--model.init_args.inner_size", "8"])
    folder = tmp_path / "runs" / "id" / "seed2024"
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    for name in ("best.ckpt", "last.ckpt"):
        saved = torch.load(folder / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert saved["hyper_parameters"]["hidden_size"] == 8  # the second run's
    assert json.loads((folder / "metrics.json").read_text())["best_checkpoint"] == str(
        folder / "checkpoints" / "best.ckpt"
    )
