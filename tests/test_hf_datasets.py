"""The ``datasets`` reader: a catalogue saved with ``save_to_disk`` prepares exactly like the same
catalogue written as CSV, trains through ``sicsrec fit``, and bad columns are named."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sicsrec.cli import main
from sicsrec.data.formats import CatalogueFormat, HFDatasetFormat, NineRecFormat
from sicsrec.data.prepare import prepare
from sicsrec.errors import DataError
from tests.test_cli import tiny_config


@pytest.fixture(scope="module")
def tables(generated, tmp_path_factory):
    """The generated dataset as two tables, shuffled (the readers sort by time), with covers,
    written as a CSV catalogue and as a ``DatasetDict`` whose covers are ``Image`` bytes."""
    import datasets

    raw = NineRecFormat().read(generated)
    rows = pd.read_csv(generated / "Gen_pair.csv", header=None, names=["user_id", "item_id", "timestamp"], dtype=str)
    rows = rows.sample(frac=1.0, random_state=0).reset_index(drop=True)
    items = pd.DataFrame({"item_id": raw.item_ids, "title": raw.titles["en"]})
    covers = [str(Path(p).relative_to(generated)) if p else "" for p in raw.images]
    out = tmp_path_factory.mktemp("tables")
    csv = out / "csv"
    csv.mkdir()
    rows.to_csv(csv / "interactions.csv", index=False)
    items.assign(cover=[str(generated / c) if c else "" for c in covers]).to_csv(csv / "items.csv", index=False)
    with_bytes = items.assign(cover=[{"bytes": (generated / c).read_bytes(), "path": None} for c in covers])
    hf = out / "hf"
    datasets.DatasetDict(
        {
            "interactions": datasets.Dataset.from_pandas(rows.assign(timestamp=rows.timestamp.astype(np.int64))),
            "items": datasets.Dataset.from_pandas(with_bytes).cast_column("cover", datasets.Image()),
        }
    ).save_to_disk(str(hf))
    return raw, csv, hf


def test_a_saved_datasetdict_prepares_exactly_like_the_same_catalogue_as_csv(tables):
    raw, csv, hf = tables
    from_csv = prepare(csv, CatalogueFormat(image_column="cover"))
    from_hf = prepare(hf, HFDatasetFormat(image_column="cover"))
    assert from_hf.user_ids == from_csv.user_ids and from_hf.item_ids == from_csv.item_ids
    assert np.array_equal(from_hf.offsets, from_csv.offsets) and np.array_equal(from_hf.items, from_csv.items)
    assert from_hf.titles == from_csv.titles
    # and both are the generated sequences themselves (time order, not the shuffled row order)
    assert dict(zip(raw.user_ids, raw.sequences)) == {
        u: [from_hf.item_ids[i - 1] for i in from_hf.sequence(k)] for k, u in enumerate(from_hf.user_ids)
    }
    # covers given as bytes are the same images as the files
    digest = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in from_hf.images]
    assert digest == [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in from_csv.images]


def test_one_table_with_item_fields_gives_the_same_items_and_conflicts_are_named(tables, tmp_path):
    import datasets

    _, csv, hf = tables
    rows = pd.read_csv(csv / "interactions.csv", dtype=str)
    items = pd.read_csv(csv / "items.csv", dtype=str)
    joined = rows.merge(items[["item_id", "title"]], on="item_id", how="left")
    joined["timestamp"] = joined.timestamp.astype(np.int64)
    datasets.Dataset.from_pandas(joined).save_to_disk(str(tmp_path / "one"))
    one = HFDatasetFormat().read(tmp_path / "one")
    by_table = HFDatasetFormat().read(hf)
    assert dict(zip(one.user_ids, one.sequences)) == dict(zip(by_table.user_ids, by_table.sequences))
    titles = dict(zip(by_table.item_ids, by_table.titles["en"]))
    assert {i: t for i, t in zip(one.item_ids, one.titles["en"])} == {i: titles[i] for i in one.item_ids}
    joined.loc[7, "title"] = "another title"
    datasets.Dataset.from_pandas(joined).save_to_disk(str(tmp_path / "conflict"))
    with pytest.raises(DataError, match=r"conflict:(\d+): item '.*' has other \['title'\] than in row (\d+)") as err:
        HFDatasetFormat().read(tmp_path / "conflict")
    assert 7 in (err.value.line, int(str(err.value).split("than in row ")[1].split()[0]))  # the changed row


def test_a_missing_column_a_wrong_type_and_a_missing_split_are_named(tables, tmp_path):
    import datasets

    _, _, hf = tables
    with pytest.raises(DataError, match=r"hf\[items\]: missing column\(s\) \['name'\]"):
        HFDatasetFormat(title_columns={"en": "name"}).read(hf)
    with pytest.raises(DataError, match=r"no 'clicks' split; found \['interactions', 'items'\]"):
        HFDatasetFormat(interactions="clicks").read(hf)
    loaded = datasets.load_from_disk(str(hf))
    listed = loaded["interactions"].map(lambda r: {"item_id": [r["item_id"]]})  # a list per row
    datasets.DatasetDict({"interactions": listed, "items": loaded["items"]}).save_to_disk(str(tmp_path / "lists"))
    with pytest.raises(DataError, match=r"lists\[interactions\]: column 'item_id' holds List.*expected strings"):
        HFDatasetFormat().read(tmp_path / "lists")
    stamped = loaded["interactions"].map(
        lambda r, k: {"timestamp": "soon" if k == 5 else str(r["timestamp"])}, with_indices=True
    )
    datasets.DatasetDict({"interactions": stamped, "items": loaded["items"]}).save_to_disk(str(tmp_path / "stamp"))
    with pytest.raises(DataError, match=r"stamp\[interactions\]:5: timestamp 'soon' is not a number"):
        HFDatasetFormat().read(tmp_path / "stamp")
    with pytest.raises(DataError, match="not a dataset written by save_to_disk"):
        HFDatasetFormat().read(tmp_path)


def test_sicsrec_fit_trains_through_the_datasets_reader(tables, tmp_path, capsys):
    _, _, hf = tables
    config = tiny_config(tmp_path, hf)
    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["max_epochs"] = 1
    cfg["data"]["init_args"]["reader"] = {
        "class_path": "sicsrec.data.HFDatasetFormat",
        "init_args": {"image_column": "cover"},
    }
    config.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(config)])
    report = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert report["dataset"] == "hf" and report["test/hr@10"] > 0
    assert report["data_key"] == prepare(hf, HFDatasetFormat(image_column="cover")).key


def test_a_hub_name_is_loaded_with_load_dataset_and_keyed_by_its_cached_files(tables, monkeypatch, tmp_path):
    """No hub here: ``datasets.load_dataset`` is replaced by the saved DatasetDict it would return
    (as the hub's cached Arrow files), to check what the reader does with it."""
    import datasets

    _, _, hf = tables
    asked = []

    def load_dataset(name, revision=None):
        asked.append((name, revision))
        return datasets.load_from_disk(str(hf))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    reader = HFDatasetFormat(image_column="cover", hub_name="team/shop-events", revision="v1")
    from_hub = prepare(tmp_path / "not-a-folder", reader)
    from_disk = prepare(hf, HFDatasetFormat(image_column="cover"))
    assert asked and set(asked) == {("team/shop-events", "v1")}
    assert from_hub.name == "shop-events" and from_hub.user_ids == from_disk.user_ids
    assert np.array_equal(from_hub.items, from_disk.items)
    assert all(path.suffix == ".arrow" for path in reader.source_files(tmp_path))
