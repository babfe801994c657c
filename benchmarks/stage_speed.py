"""Seconds per epoch of SICSRec stage 1 and stage 2 on a real dataset, with the shipped configs.

    .venv/bin/python benchmarks/stage_speed.py [--dataset configs/data/bili_food.yaml] [--epochs 3] [--threads 1]

Builds the model and data exactly as ``configs/stage1.yaml`` and ``stage2.yaml`` do for that
dataset (their ``init_args``, resolved for the data file), runs a few epochs of each and prints,
per stage: training seconds per epoch, validation seconds per pass, training targets per second
and peak RSS. Stage 2 starts from the stage-1 weights this script just trained (speed does not
depend on their quality).
The first epoch is left out of the means (allocator warm-up). Needs the cached features that
``configs/features.yaml`` writes for it.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from sicsrec.data import SequenceDataModule
from sicsrec.dataset import DatasetFile
from sicsrec.modules import Stage1Module, Stage2Module

ROOT = Path(__file__).resolve().parents[1]


class EpochClock(L.Callback):
    """Wall time of each training epoch and each validation pass."""

    def __init__(self):
        self.train, self.valid = [], []

    def on_train_epoch_start(self, trainer, module):
        self._t = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.train.append(time.perf_counter() - self._t)

    def on_validation_epoch_start(self, trainer, module):
        self._v = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module):
        if not trainer.sanity_checking:
            self.valid.append(time.perf_counter() - self._v)


def init_args(dataset: DatasetFile, path: Path, section: str) -> dict:
    args = dict(dataset.resolve(yaml.safe_load(path.read_text()))[section]["init_args"])
    args.pop("optimizer", None)  # the modules' default is the shipped Adam(lr=1e-3)
    return args


def run(module: L.LightningModule, data: SequenceDataModule, epochs: int) -> EpochClock:
    clock = EpochClock()
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[clock],
        accelerator="cpu",
        reload_dataloaders_every_n_epochs=1,
    )
    trainer.fit(module, data)
    return clock


def mean_after_first(values: list[float]) -> float:
    rest = values[1:] or values
    return sum(rest) / len(rest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="configs/data/bili_food.yaml", help="a data file")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.chdir(ROOT)  # the configs' paths are relative to the repository
    dataset, folder = DatasetFile.load(args.dataset), ROOT / "configs"
    data_args = init_args(dataset, folder / "stage1.yaml", "data")
    features = Path(data_args["features"])
    if not features.is_file():
        raise SystemExit(
            f"{features} not found: run `sicsrec features --config configs/features.yaml "
            f"--dataset {args.dataset}` first"
        )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        L.seed_everything(0, verbose=False)
        stage1 = Stage1Module(**init_args(dataset, folder / "stage1.yaml", "model"))
        data = SequenceDataModule(**data_args)
        clock = run(stage1, data, args.epochs)
        targets = int(data.train_set.sizes.sum())
        rows.append(("stage 1 (ID + content encoders)", clock, targets))
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        checkpoint = Path(tmp) / "stage1.ckpt"
        torch.save({"state_dict": stage1.state_dict(), "hyper_parameters": dict(stage1.hparams)}, checkpoint)
        model_args = init_args(dataset, folder / "stage2.yaml", "model")
        model_args["stage1_checkpoint"] = str(checkpoint)
        stage2 = Stage2Module(**model_args)
        data = SequenceDataModule(**init_args(dataset, folder / "stage2.yaml", "data"))
        clock = run(stage2, data, args.epochs)
        rows.append(("stage 2 (LoRA + decoder + fusion)", clock, targets))
        rss2 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(
        f"{dataset.name}, {args.epochs} epochs per stage (means leave out the first), torch threads "
        f"{args.threads}, {platform.processor() or platform.machine()}, torch {torch.__version__}"
    )
    print("| stage | training s/epoch | validation s/pass | epoch total s | training targets/s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for (name, clock, targets), rss in zip(rows, (rss1, rss2)):
        train, valid = mean_after_first(clock.train), mean_after_first(clock.valid)
        print(f"| {name} | {train:.2f} | {valid:.2f} | {train + valid:.2f} | {targets / train:,.0f} | {rss:,.0f} |")


if __name__ == "__main__":
    main()
