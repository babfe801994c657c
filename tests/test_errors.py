"""The catalogue of bad input (docs/errors.md): each case gives one clear error or a counted skip."""

import os
import signal
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from PIL import Image

from sicsrec.cli import main
from sicsrec.data import SequenceDataModule, prepare
from sicsrec.data.datamodule import AlignDataModule
from sicsrec.data.formats import SequenceFormat, load_cover
from sicsrec.errors import ConfigError, DataError, TrainingError
from sicsrec.modules import Stage1Module
from tests.conftest import REPO


def dataset(root, items="0,a,A\n1,b,B\n2,c,C\n", sequences="0 0 1 2\n1 2 1 0 1\n"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "X_item.csv").write_text(items, encoding="utf-8")
    (root / "sequential_data.txt").write_text(sequences, encoding="utf-8")
    return root


def test_missing_item_file(tmp_path):
    root = dataset(tmp_path / "d")
    (root / "X_item.csv").unlink()
    with pytest.raises(DataError, match="no item file"):
        SequenceFormat().read(root)


def test_empty_item_file(tmp_path):
    with pytest.raises(DataError, match="X_item.csv: file is empty"):
        SequenceFormat().read(dataset(tmp_path / "d", items="\n\n"))


def test_missing_sequence_file(tmp_path):
    root = dataset(tmp_path / "d")
    (root / "sequential_data.txt").unlink()
    with pytest.raises(DataError, match="sequential_data.txt: file not found"):
        SequenceFormat().read(root)


def test_title_with_newline_quotes_and_commas_parses(tmp_path):
    raw = SequenceFormat().read(
        dataset(tmp_path / "d", items='0,a,"Line one\nline two, with ""quotes"""\n1,b,B\n2,c,C\n')
    )
    assert raw.titles["en"][0] == 'Line one\nline two, with "quotes"'


def test_users_without_items_and_short_users_are_dropped_and_counted(tmp_path):
    root = dataset(tmp_path / "d", sequences="0 0 1 2\n1\n2 0 1\n3 1 2 0 1\n")
    data = prepare(root, cache_dir=tmp_path / "c")
    assert data.stats["users_without_items"] == 1
    assert data.stats["dropped_users_too_short"] == 1  # user 2 has 2 items < min_seq_len 3
    assert data.user_ids == ["0", "3"]


def test_duplicate_consecutive_interactions_are_kept_or_dropped_and_counted(tmp_path):
    root = dataset(tmp_path / "d", sequences="0 0 0 1 1 2\n1 2 1 0\n")
    kept = prepare(root, cache_dir=tmp_path / "c")
    dropped = prepare(root, drop_consecutive_duplicates=True, cache_dir=tmp_path / "c")
    assert kept.stats["interactions"] == 8 and kept.stats["dropped_consecutive_duplicates"] == 0
    assert dropped.stats["interactions"] == 6 and dropped.stats["dropped_consecutive_duplicates"] == 2


def test_covers_in_unusual_modes_and_sizes_load_as_rgb(tmp_path):
    paths = {}
    for mode, fmt in (("L", "JPEG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("P", "PNG"), ("I;16", "PNG")):
        p = tmp_path / f"{mode.replace(';', '')}.{fmt.lower()}"
        Image.new(mode, (20, 30)).save(p, format=fmt)
        paths[mode] = p
    Image.new("RGB", (4000, 3000), (10, 20, 30)).save(tmp_path / "huge.jpg")
    for p in [*paths.values(), tmp_path / "huge.jpg"]:
        img = load_cover(str(p))
        assert img is not None and img.mode == "RGB", p
    assert max(load_cover(str(tmp_path / "huge.jpg")).size) <= 1000  # decoded at reduced size
    transparent = load_cover(str(paths["RGBA"]))
    assert transparent.getpixel((0, 0)) == (255, 255, 255)  # transparency → white, not black


def test_corrupt_and_bomb_covers_are_skipped(tmp_path, monkeypatch):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    assert load_cover(str(bad)) is None
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40,000 pixels > 2 × limit: a "bomb"
    assert load_cover(str(big)) is None


def test_pairs_file_for_another_dataset(tmp_path, generated):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"target": "v1000", "chosen": "v1001"}\n{"target": "nope", "chosen": "v1001"}\n')
    dm = AlignDataModule(str(generated), str(pairs))
    with pytest.raises(DataError) as err:
        _ = dm.pairs
    assert err.value.line == 2 and "another dataset" in str(err.value)


def cli_error(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code, capsys.readouterr().err


def test_config_unknown_key_and_wrong_type(capsys):
    config = str(REPO / "configs" / "id_generated.yaml")
    code, err = cli_error(capsys, "fit", "--config", config, "--model.init_args.hiden_size", "64")
    assert code != 0 and "hiden_size" in err
    code, err = cli_error(capsys, "fit", "--config", config, "--model.init_args.hidden_size", "big")
    assert code != 0 and "hidden_size" in err


def test_config_missing_data_path(capsys, tmp_path):
    code, err = cli_error(
        capsys,
        "fit",
        "--config",
        str(REPO / "configs" / "id_generated.yaml"),
        "--data.init_args.root",
        str(tmp_path / "nowhere"),
        "--data.init_args.generate_if_missing",
        "false",
    )
    assert code == 2 and "nowhere: dataset folder not found" in err and "Traceback" not in err


def test_checkpoint_for_another_catalogue_is_refused(tmp_path, generated):
    model = Stage1Module(num_items=7, max_len=20, hidden_size=8, inner_size=8, use_content=False)
    trainer = L.Trainer(max_epochs=0, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "other.ckpt")
    fresh = Stage1Module(hidden_size=8, inner_size=8, use_content=False)
    with pytest.raises(ConfigError, match="num_items=7"):
        L.Trainer(logger=False, enable_progress_bar=False).test(
            fresh, SequenceDataModule(str(generated), max_len=20), ckpt_path=tmp_path / "other.ckpt"
        )


class PoisonAtStep(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == 3:
            with torch.no_grad():
                module.id_encoder.item_embedding.weight.fill_(float("nan"))


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path, generated):
    from lightning.pytorch.callbacks import ModelCheckpoint

    dm = SequenceDataModule(str(generated), max_len=20, batch_size=1024)
    model = Stage1Module(hidden_size=8, inner_size=8, use_content=False)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = L.Trainer(
        max_epochs=5,
        reload_dataloaders_every_n_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ckpt, PoisonAtStep()],
        limit_val_batches=0,
    )
    with pytest.raises(TrainingError) as err:
        trainer.fit(model, dm)
    assert "global step 3" in str(err.value) and "last.ckpt" in str(err.value)


def test_a_killed_writer_leaves_no_file_a_later_run_would_trust(tmp_path):
    target = tmp_path / "out.npy"
    code = textwrap.dedent(f"""
        import time, numpy as np
        from sicsrec.io import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"x" * 1000); f.flush()
                print("writing", flush=True)
                time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    leftovers = list(tmp_path.glob(".out.npy.*.tmp"))
    assert len(leftovers) == 1  # a stray temporary, never the real name


class LMDB_Image:  # noqa: N801 - NineRec's record class, pickled under this name
    def __init__(self, image, id):
        self.channels = image.shape[2]
        self.size = image.shape[:2]
        self.image = image.tobytes()
        self.id = id


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/sicsrec-pwned",))


def test_lmdb_covers_are_read_through_a_restricted_unpickler(tmp_path):
    import pickle

    import lmdb
    import numpy as np

    from sicsrec.data.formats import NineRecFormat

    root = tmp_path / "X"
    root.mkdir()
    (root / "X_item.csv").write_text("v1,a,A\nv2,b,B\nv3,c,C\n")
    (root / "X_pair.csv").write_text("u1,v1,1\nu1,v2,2\nu1,v3,3\n")
    env = lmdb.open(str(root / "X_cover.lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"v1", pickle.dumps(LMDB_Image(np.full((8, 6, 3), 200, dtype=np.uint8), "v1")))
        txn.put(b"v2", pickle.dumps(Exploit()))
    env.close()
    raw = NineRecFormat().read(root)
    img = load_cover(raw.images[0])
    assert img.size == (6, 8) and img.getpixel((0, 0)) == (200, 200, 200)
    assert load_cover(raw.images[2]) is None  # no record: a counted missing cover
    with pytest.raises(DataError, match="refusing to unpickle posix.system|refusing to unpickle os.system") as err:
        load_cover(raw.images[1])
    assert "'v2'" in str(err.value)
    assert not os.path.exists("/tmp/sicsrec-pwned")


def test_a_damaged_prepared_cache_is_rebuilt_not_trusted(tmp_path):
    root = dataset(tmp_path / "d")
    first = prepare(root, cache_dir=tmp_path / "c")
    (cached,) = (tmp_path / "c" / "prepared").glob("*.npz")
    cached.write_bytes(cached.read_bytes()[:100])
    again = prepare(root, cache_dir=tmp_path / "c")
    assert again.key == first.key and again.user_ids == first.user_ids
    assert (again.items == first.items).all()


def test_features_made_for_another_dataset_are_refused(tmp_path, generated):
    manifest = tmp_path / "features.json"
    manifest.write_text('{"dataset": "Other", "data_key": "abc", "text": {"path": "x", "key": "y", "dim": 3}}')
    dm = SequenceDataModule(str(generated), features=str(manifest))
    with pytest.raises(ConfigError, match="another dataset"):
        dm.item_features()


def test_catalogue_with_missing_columns_names_them(tmp_path):
    from sicsrec.data.formats import CatalogueFormat

    (tmp_path / "items.csv").write_text("item_id,title\na,A\n")
    (tmp_path / "interactions.csv").write_text("user,item_id\nu,a\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['user_id', 'timestamp'\]") as err:
        CatalogueFormat().read(tmp_path)
    assert err.value.path.endswith("interactions.csv")
