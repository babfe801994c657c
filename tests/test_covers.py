"""Covers on a catalogue: each item's picture reaches its own feature only; a missing one is masked."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from sicsrec.content.encoders import ImageEncoder
from sicsrec.content.featurize import image_item_features
from sicsrec.data.formats import CatalogueFormat
from sicsrec.data.prepare import prepare
from sicsrec.errors import DataError
from sicsrec.nn.content_encoder import ContentEncoder

COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (240, 220, 20), (20, 20, 20), (250, 250, 250)]


def catalogue(folder, covers: list[str]):
    """Six items (the third without a cover), three users who each watch all of them."""
    folder.mkdir(exist_ok=True)
    (folder / "covers").mkdir(exist_ok=True)
    for i, colour in enumerate(COLOURS):
        image = Image.new("RGB", (40, 60), colour)
        image.paste((255 - colour[0], 128, i * 40), (5, 10 + 6 * i, 35, 20 + 6 * i))  # a bar: not a flat colour
        image.save(folder / "covers" / f"{i}.jpg")
    items = pd.DataFrame({"item_id": [f"m{i}" for i in range(6)], "title": [f"Movie {i}" for i in range(6)]})
    items["cover"] = covers
    items.to_csv(folder / "items.csv", index=False)
    events = [(u, f"m{i}", 10 * u + i) for u in range(3) for i in range(6)]
    pd.DataFrame(events, columns=["user_id", "item_id", "timestamp"]).to_csv(folder / "interactions.csv", index=False)
    return folder


def test_a_cover_that_is_no_file_is_one_line_naming_the_file_and_row(tmp_path):
    root = catalogue(tmp_path / "shop", [f"covers/{i}.jpg" for i in range(6)])
    items = pd.read_csv(root / "items.csv", keep_default_na=False)
    items.loc[4, "cover"] = "covers/4.jpeg"  # a typo
    items.to_csv(root / "items.csv", index=False)
    with pytest.raises(DataError) as err:
        CatalogueFormat(image_column="cover").read(root)
    assert str(err.value).startswith(f"{root / 'items.csv'}:6: cover 'covers/4.jpeg' (column cover) is not a file")


def test_swapping_one_items_cover_changes_its_image_feature_and_no_other(tmp_path):
    covers = [f"covers/{i}.jpg" for i in range(6)]
    covers[2] = ""  # no picture: masked, never a blank one
    reader = CatalogueFormat(image_column="cover")
    encoder = ImageEncoder(random_init=True, image_size=32)
    torch.manual_seed(0)
    before = image_item_features(encoder, prepare(catalogue(tmp_path / "a", covers), reader, cache_dir=tmp_path))
    swapped = list(covers)
    swapped[0] = "covers/5.jpg"  # the first movie now shows the last one's poster
    after = image_item_features(encoder, prepare(catalogue(tmp_path / "b", swapped), reader, cache_dir=tmp_path))
    assert before.mask.tolist() == after.mask.tolist() == [False, True, True, False, True, True, True]
    changed = [row for row in range(1, 7) if not np.allclose(before.values[row], after.values[row], atol=1e-5)]
    assert changed == [1]  # item m0 is row 1 (row 0 is padding)
    np.testing.assert_allclose(after.values[1], before.values[6], atol=1e-5)


def test_an_item_without_a_cover_keeps_its_content_vector_whatever_the_other_covers_are():
    torch.manual_seed(0)
    encoder = ContentEncoder({"text": 12, "image": 16}, max_len=5, hidden_size=8, inner_size=8, num_layers=1)
    text, image = torch.randn(7, 12), torch.randn(7, 16)
    masks = {"text": torch.ones(7, dtype=torch.bool), "image": torch.tensor([0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)}
    vectors = encoder.item_vectors({"text": text, "image": image}, masks)
    other = encoder.item_vectors({"text": text, "image": image + torch.randn(7, 16)}, masks)  # every picture changes
    torch.testing.assert_close(other[3], vectors[3])  # the item without one (row 3) does not move
    assert not torch.allclose(other[1], vectors[1]) and not torch.allclose(other[6], vectors[6])
    text_only = encoder.item_vectors(
        {"text": text, "image": image}, {**masks, "image": torch.zeros(7, dtype=torch.bool)}
    )
    torch.testing.assert_close(vectors[3], text_only[3])  # its vector is its title's alone


def test_targets_without_a_cover_are_reported_as_a_group_of_their_own(tmp_path):
    from sicsrec.data import SequenceDataModule
    from sicsrec.evaluation import evaluate

    covers = [f"covers/{i}.jpg" for i in range(6)]
    covers[4] = ""  # m4, every user's validation target, has no picture; m5, the test target, has one
    root = catalogue(tmp_path / "shop", covers)
    dm = SequenceDataModule(str(root), CatalogueFormat(image_column="cover"), cache_dir=str(tmp_path / "cache"))
    dm.setup("test")

    def first_scorer(batch):  # ranks item 1 first: every target misses the top 1, hits the top 10
        return -torch.arange(dm.num_items + 1, dtype=torch.float).expand(len(batch["user"]), -1)

    valid = evaluate(first_scorer, dm.val_dataloader(), protocol="recbole")
    test = evaluate(first_scorer, dm.test_dataloader(), protocol="recbole")
    assert (valid["no_cover/users"], valid["cover/users"]) == (3, 0)
    assert (test["no_cover/users"], test["cover/users"]) == (0, 3)
    assert valid["no_cover/hr@10"] == valid["hr@10"] == 1.0 and "no_cover/hr@10" not in test
    without = SequenceDataModule(str(root), CatalogueFormat(), cache_dir=str(tmp_path / "cache"))
    without.setup("test")  # the same catalogue read without its covers: no cover groups
    assert not any(k.startswith(("no_cover/", "cover/")) for k in evaluate(first_scorer, without.test_dataloader()))
