"""Readers: real NineRec files, the release layout, a team's catalogue, and bad files."""

import csv

import pandas as pd
import pytest

from sicsrec.data.formats import CatalogueFormat, NineRecFormat, SequenceFormat, detect_reader
from sicsrec.errors import DataError
from tests.conftest import ninerec


def test_real_bili_food_matches_published_statistics():
    raw = SequenceFormat().read(ninerec("Bili_Food"))
    assert len(raw.user_ids) == 6549
    assert len(raw.item_ids) == 1579
    assert sum(map(len, raw.sequences)) == 39740
    # the first English title holds a comma inside quotes
    assert raw.titles["en"][0] == (
        "Visit America's Cheap Pizza Place! 24K gold pizza, this price is too close to the people, right?"
    )
    assert raw.sequences[0] == ["1", "2", "0", "4", "3"]


def test_release_layout_pair_order_is_detected(generated, tmp_path):
    first = NineRecFormat().read(generated)
    assert first.images is not None and all(first.images)
    swapped = tmp_path / "Gen"
    swapped.mkdir()
    for f in generated.glob("Gen_item.csv"):
        (swapped / f.name).write_bytes(f.read_bytes())
    with open(generated / "Gen_pair.csv") as src, open(swapped / "Gen_pair.csv", "w", newline="") as dst:
        w = csv.writer(dst)
        for user, item, stamp in csv.reader(src):
            w.writerow([item, user, stamp])
    second = NineRecFormat().read(swapped)
    assert dict(zip(first.user_ids, first.sequences)) == dict(zip(second.user_ids, second.sequences))


def test_ambiguous_pair_file_asks_for_the_order(tmp_path):
    (tmp_path / "X_item.csv").write_text("1,a,A\n2,b,B\n3,c,C\n")
    (tmp_path / "X_pair.csv").write_text("1,2,10\n2,3,11\n")
    with pytest.raises(DataError, match="pair_order"):
        NineRecFormat().read(tmp_path)
    raw = NineRecFormat(pair_order="user_item").read(tmp_path)
    assert dict(zip(raw.user_ids, raw.sequences)) == {"1": ["2"], "2": ["3"]}


def test_catalogue_sorts_by_time_stably(tmp_path):
    pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["A", "B, with comma", 'C "q"']}).to_csv(
        tmp_path / "items.csv", index=False
    )
    pd.DataFrame(
        {"user_id": ["u", "u", "u", "w"], "item_id": ["c", "a", "b", "a"], "timestamp": [5, 1, 1, 3]}
    ).to_parquet(tmp_path / "interactions.parquet")
    reader = detect_reader(tmp_path)
    assert isinstance(reader, CatalogueFormat)
    raw = reader.read(tmp_path)
    assert dict(zip(raw.user_ids, raw.sequences)) == {"u": ["a", "b", "c"], "w": ["a"]}
    assert raw.titles["en"][1] == "B, with comma"


def test_a_title_can_join_columns_and_the_cover_column_is_detected(tmp_path):
    pd.DataFrame(
        {
            "item_id": ["a", "b"],
            "title": ["Heat (1995)", "Up (2009)"],
            "genres": ["Action, Crime", ""],
            "cover": ["covers/a.jpg", ""],
        }
    ).to_csv(tmp_path / "items.csv", index=False)
    pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1, 2]}).to_csv(
        tmp_path / "interactions.csv", index=False
    )
    (tmp_path / "covers").mkdir()
    (tmp_path / "covers" / "a.jpg").write_bytes(b"")  # the reader checks the file is there, not its picture
    reader = detect_reader(tmp_path)
    assert reader.image_column == "cover"
    assert reader.read(tmp_path).images == [str(tmp_path / "covers" / "a.jpg"), None]  # empty: no picture
    joined = CatalogueFormat(title_columns={"en": ["title", "genres"]}).read(tmp_path)
    assert joined.titles["en"] == ["Heat (1995). Action, Crime", "Up (2009)"]
    with pytest.raises(DataError, match=r"missing column\(s\) \['year'\]"):
        CatalogueFormat(title_columns={"en": ["title", "year"]}).read(tmp_path)


def test_movielens_100k_reads_through_its_data_file_with_posters_where_they_exist():
    from sicsrec.dataset import DatasetFile
    from tests.conftest import REPO, movielens

    root = movielens()
    data = DatasetFile.load(REPO / "configs" / "data" / "ml_100k.yaml")
    raw = CatalogueFormat(**data.reader["init_args"]).read(root)
    assert (len(raw.user_ids), len(raw.item_ids), sum(map(len, raw.sequences))) == (943, 1682, 100_000)
    assert sum(p is not None for p in raw.images) == 1397
    assert raw.titles["en"][0] == "Toy Story (1995). Animation, Children's, Comedy"
    assert detect_reader(root).image_column == "cover"


def write_dataset(folder, items: str, sequences: str):
    folder.mkdir(exist_ok=True)
    (folder / "X_item.csv").write_text(items, encoding="utf-8")
    (folder / "sequential_data.txt").write_text(sequences, encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "items, sequences, file, line, problem",
    [
        ("0,a,A\n1,b,B\n", "0 0 1\n1 0 x1\n", "sequential_data.txt", 2, "not a non-negative integer"),
        ("0,a,A\n1,b,B\n", "0 0 1\n1 0 7\n", "sequential_data.txt", 2, "'7' is not in the item file"),
        ("0,a,A\n1,b,B\n", "", "sequential_data.txt", None, "empty"),
        ("0,a,A\n1,b\n", "0 0 1\n", "X_item.csv", 2, "expected 3 columns"),
        ("0,a,A\n0,b,B\n", "0 0 1\n", "X_item.csv", 2, "duplicate item id"),
        ('0,a,A\n1,"b\nstill b",B\nx,c,C\n', "0 0 1\n", "X_item.csv", 4, "not a non-negative integer"),
    ],
)
def test_bad_files_name_file_line_and_problem(tmp_path, items, sequences, file, line, problem):
    root = write_dataset(tmp_path / "d", items, sequences)
    with pytest.raises(DataError) as err:
        SequenceFormat().read(root)
    assert err.value.path.endswith(file)
    assert err.value.line == line
    assert problem in str(err.value)


def test_non_utf8_bytes_are_reported_with_their_line(tmp_path):
    root = write_dataset(tmp_path / "d", "0,a,A\n", "0 0\n")
    (root / "X_item.csv").write_bytes(b"0,a,A\n1,\xff\xfe,B\n")
    with pytest.raises(DataError, match="not UTF-8") as err:
        SequenceFormat().read(root)
    assert err.value.line == 2
