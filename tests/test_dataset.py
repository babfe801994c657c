"""A dataset is one data file; the step configs name none and resolve for it, by hand or in `sicsrec run`."""

import re
from pathlib import Path

import pytest
import torch
import yaml

from sicsrec.chain import Chain
from sicsrec.cli import main
from sicsrec.content.encoders import ImageEncoder, TextEncoder
from sicsrec.content.featurize import featurize
from sicsrec.content.pairs import run_pairs
from sicsrec.dataset import DatasetFile
from tests.conftest import REPO, TINY_TEXT_ENCODER
from tests.test_covers import catalogue

DATA = REPO / "configs" / "data"


def test_each_dataset_is_named_in_its_own_data_file_only():
    names = {"bili_food": "Bili_Food", "bili_dance": "Bili_Dance", "bili_movie": "Bili_Movie", "ml_100k": "ml-100k"}
    files = [p for p in (REPO / "configs").rglob("*.yaml")]
    for name, folder in names.items():
        holding = {p.relative_to(REPO).as_posix() for p in files if name in p.read_text() or folder in p.read_text()}
        assert holding == {f"configs/data/{name}.yaml"}, (name, holding)
        assert len((DATA / f"{name}.yaml").read_text().splitlines()) <= 15
    assert not [p for p in files if re.search(r"version_(\d|N)", p.read_text())]  # Lightning's counted folders


@pytest.mark.parametrize("seed, variant", [(2024, None), (2025, "lr3e-4")])
def test_a_hand_run_writes_where_sicsrec_run_writes(tmp_path, monkeypatch, seed, variant):
    """--dataset resolves the step configs' placeholders into the layout `sicsrec run` computes."""
    monkeypatch.chdir(REPO)
    dataset = DatasetFile.load(DATA / "bili_food.yaml")
    chain = Chain(DATA / "bili_food.yaml", REPO / "configs", variant or "", {"stage1": ["x=1"]} if variant else {})
    for step in ("stage1", "stage2"):
        version = chain.version(step, seed)
        by_hand = dataset.resolve(chain.load(step), seed, version)
        ran = chain.stage_config(step, seed)
        csv = [lg["init_args"] for lg in by_hand["trainer"]["logger"] if lg["class_path"].endswith("CSVLogger")][0]
        assert csv["save_dir"] + "/" + csv["name"] + "/" + csv["version"] == str(chain.run_dir(step, seed))
        assert by_hand["data"]["init_args"]["features"] == ran["data"]["init_args"]["features"]
        assert by_hand["data"]["init_args"]["root"] == ran["data"]["init_args"]["root"] == dataset.root
        assert by_hand["model"]["init_args"]["protocol"] == dataset.protocol == "ninerec"
    stage2 = dataset.resolve(chain.load("stage2"), seed, chain.version("stage2", seed))
    if not variant:  # a hand-run stage 2 starts from the stage 1 of its seed, as the chain's does
        ran = chain.stage_config("stage2", seed)
        assert stage2["model"]["init_args"]["stage1_checkpoint"] == ran["model"]["init_args"]["stage1_checkpoint"]
    pairs = dataset.resolve_function(chain.load("pairs"), run_pairs)
    assert pairs["out"] == chain.content_config("pairs")["out"] and pairs["root"] == dataset.root
    features = dataset.resolve_function(chain.load("features"), featurize)
    assert {k: features[k] for k in ("out", "align_checkpoint")} == {
        k: chain.content_config("features")[k] for k in ("out", "align_checkpoint")
    }
    align, ran = dataset.resolve(chain.load("align")), chain.content_config("align")
    assert align["data"]["init_args"]["pairs"] == ran["data"]["init_args"]["pairs"]
    assert align["trainer"]["callbacks"][0]["init_args"]["dirpath"] == str(chain.align_checkpoint().parent)


def test_variant_and_seed_name_a_hand_runs_folder(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    args = ["--config", "configs/stage2.yaml", "--dataset", str(DATA / "bili_food.yaml"), "--seed_everything", "7"]
    with pytest.raises(SystemExit):
        main(["fit", *args, "--variant", "lr3e-4", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    csv = printed["trainer"]["logger"][0]["init_args"]
    assert (csv["save_dir"], csv["name"], csv["version"]) == ("runs/bili_food", "stage2", "lr3e-4-seed7")
    assert printed["model"]["init_args"]["stage1_checkpoint"] == "runs/bili_food/stage1/seed7/checkpoints/best.ckpt"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nroots: data/x\n", "unknown key 'roots' (did you mean 'root'?)"),
        ("name: x\n", "root is missing"),
        ("name: my shop\nroot: data/x\n", "name 'my shop': letters, digits"),
        ("name: x\nroot: data/x\nprotocol: sampled\n", "protocol 'sampled': expected recbole or ninerec"),
        ("name: x\nroot: [data\n", "not valid YAML"),
        ("name: x\nroot: data/x\nmodalities: [txt]\n", "modalities ['txt']: expected a list of text and image"),
        ("name: x\nroot: data/x\nmodalities: text\n", "modalities 'text': expected a list of text and image"),
    ],
)
def test_a_bad_data_file_is_one_line(tmp_path, capsys, text, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(REPO / "configs" / "stage1.yaml"), "--dataset", str(bad)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and str(bad) in err and err.count("\n") == 1, err


def test_a_step_config_without_a_data_file_says_so(capsys):
    for command, config in (("fit", "stage1.yaml"), ("pairs", "pairs.yaml"), ("features", "features.yaml")):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--config", str(REPO / "configs" / config)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "name the dataset with --dataset DATA_FILE" in err and err.count("\n") == 1


def test_the_cold_start_protocol_of_a_data_file_reaches_every_step_that_reads_interactions(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    data_file = tmp_path / "cold.yaml"
    data_file.write_text("name: food_cold\nroot: ../shared/data/ninerec/Bili_Food\ncold_items: 0.1\ncold_seed: 3\n")
    chain = Chain(data_file, REPO / "configs")
    protocol = {"cold_items": 0.1, "cold_seed": 3}
    pairs = chain.content_config("pairs")
    assert {k: pairs[k] for k in protocol} == protocol
    for config in (chain.content_config("align"), chain.stage_config("stage1", 1), chain.stage_config("stage2", 1)):
        assert {k: config["data"]["init_args"][k] for k in protocol} == protocol
    assert "cold_items" not in chain.content_config("features")  # every item is encoded: content is never held out
    assert chain.run_dir("stage1", 1) == Path("runs/food_cold/stage1/seed1")  # its own run folder


def test_a_data_files_modalities_are_what_the_recommender_reads_while_the_content_steps_keep_every_one(tmp_path):
    """`modalities: [text]` on a catalogue with covers: stage 1 and 2 train no image path (its features
    are not even read), pairs, alignment and features still see the covers, and a variant's override wins."""
    root = catalogue(tmp_path / "shop", [f"covers/{i}.jpg" for i in range(6)])
    runs, steps = tmp_path / "runs", tmp_path / "steps"
    text, image = TextEncoder(**TINY_TEXT_ENCODER), ImageEncoder(random_init=True, image_size=32)
    manifest = featurize(str(root), text=text, image=image, out=str(runs / "features"), cache_dir=str(tmp_path))
    assert manifest["image"]["items_with_features"] == 6
    data_file = tmp_path / "shop.yaml"
    data_file.write_text(yaml.safe_dump({"name": "shop", "root": str(root), "runs": str(runs), "modalities": ["text"]}))
    steps.mkdir()
    small = {
        "trainer": {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {}}]},
        "model": {"init_args": {"hidden_size": 16, "inner_size": 16, "num_layers": 1}},
    }  # fmt: skip
    for step in ("pairs", "align", "features", "stage1", "stage2", "id"):
        fitted = {} if step in ("pairs", "features") else small  # function steps take no trainer
        (steps / f"{step}.yaml").write_text(yaml.safe_dump({"base": str(REPO / "configs" / f"{step}.yaml"), **fitted}))
    chain = Chain(data_file, steps, python=None)
    for step in ("stage1", "stage2"):
        assert chain.stage_config(step, 1)["data"]["init_args"]["modalities"] == ["text"]
    assert "modalities" not in chain.stage_config("id", 1)["data"]["init_args"]  # the ID encoder reads no content
    align = chain.content_config("align")
    assert "modalities" not in align["data"]["init_args"] and align["model"]["init_args"]["image"] is not None
    assert "modalities" not in chain.content_config("pairs") and "modalities" not in chain.content_config("features")
    ablation = Chain(data_file, steps, "image_only", {"stage1": ["data.init_args.modalities=[image]"]})
    assert ablation.stage_config("stage1", 1)["data"]["init_args"]["modalities"] == ["image"]

    chain.fit("stage1", 1, None)
    trained = torch.load(runs / "stage1" / "seed1" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert trained["hyper_parameters"]["feature_dims"] == {"text": 32}
    weights = list(trained["state_dict"])
    assert any(".projections.text." in k for k in weights) and not any("image" in k for k in weights), weights
