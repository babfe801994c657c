"""Each reach into Lightning's internals (sicsrec/compat.py), exercised against the installed
Lightning: an upgrade that moves one fails here."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger

from sicsrec import compat


def trainer(**kwargs) -> L.Trainer:  # writes nothing (no checkpoints into the working directory)
    quiet = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    return L.Trainer(**quiet, **kwargs)


def test_the_installed_lightning_is_a_checked_version_and_the_cli_hook_exists():
    assert compat.unchecked_version() is None, compat.unchecked_version()
    assert "9.9.0 is installed" in compat.unchecked_version("9.9.0")
    assert compat.cli_hooks_present()


def test_attached_trainer_and_the_training_progress_counters():
    seen = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.append(
                (compat.batches_done(trainer), compat.epochs_completed(trainer), batch_idx, trainer.current_epoch)
            )

    model = BoringModel()
    assert compat.attached_trainer(model) is None
    t = trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[Record()])
    t.fit(model)
    assert compat.attached_trainer(model) is t
    assert [(done, completed) for done, completed, _, _ in seen] == [(i + 1, e) for _, _, i, e in seen]
    assert len(seen) == 6


def test_record_hparam_reaches_what_loggers_record():
    model = BoringModel()
    model.save_hyperparameters({"num_items": None})
    compat.record_hparam(model, "num_items", 42)
    assert model.hparams.num_items == 42 and model.hparams_initial["num_items"] == 42


@pytest.mark.parametrize("requested", [True, False])
def test_distributed_sampler_requested(requested):
    assert compat.distributed_sampler_requested(trainer(use_distributed_sampler=requested)) is requested


def test_best_checkpoint_and_early_stopping_records_are_what_their_state_says(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="valid/hr@10", mode="max")
    compat.set_best_checkpoint(checkpoint, str(tmp_path / "start.ckpt"), torch.tensor(0.3))
    state = checkpoint.state_dict()
    assert state["best_model_path"] == str(tmp_path / "start.ckpt") and float(
        state["best_model_score"]
    ) == pytest.approx(0.3)
    assert state["kth_best_model_path"] == str(tmp_path / "start.ckpt") and float(state["kth_value"]) == pytest.approx(
        0.3
    )
    assert list(state["best_k_models"]) == [str(tmp_path / "start.ckpt")]
    stopping = EarlyStopping(monitor="valid/hr@10", mode="max")
    compat.set_early_stopping_best(stopping, torch.tensor(0.3))
    assert float(stopping.state_dict()["best_score"]) == pytest.approx(0.3)


def test_csv_rows_put_first_are_written_before_the_new_ones(tmp_path):
    logger = CSVLogger(tmp_path, name="run", version="v")
    logger.log_metrics({"valid/hr@10": 0.5}, step=7)
    assert [row["valid/hr@10"] for row in compat.csv_rows(logger)] == [0.5]
    compat.put_csv_rows_first(logger, [{"valid/hr@10": 0.25, "step": 3, "epoch": 0}])
    with open(tmp_path / "run" / "v" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], float(r["valid/hr@10"])) for r in rows] == [("3", 0.25), ("7", 0.5)]


def test_wandb_init_kwargs_are_the_arguments_wandb_init_will_get(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(project="p", name="n", save_dir=str(tmp_path), offline=True)
    init = compat.wandb_init_kwargs(logger)
    assert init["project"] == "p" and init["name"] == "n" and init["dir"] == str(tmp_path)
    assert "anonymous" in init  # what sicsrec.cli.prepare_wandb takes out
