"""A killed fit resumed with ``--ckpt_path last`` ends where an uninterrupted run ends."""

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml

from sicsrec.cli import main
from sicsrec.data import SequenceDataModule
from tests.conftest import REPO, one_thread

STEPS_PER_EPOCH_AT_LEAST = 4


class KillAt(L.Callback):
    """Kills its own process at a training step, as a cluster's scheduler or an OOM killer would."""

    def __init__(self, step: int, sig: int = int(signal.SIGKILL)):
        self.step, self.sig = step, sig

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.sig)


def fit(
    tmp_path: Path,
    root: Path,
    name: str,
    seed: int,
    *extra: str,
    kill_at: int | None = None,
    sig: int = int(signal.SIGKILL),
    checkpoints: str | None = None,
    in_process: bool = False,
) -> subprocess.CompletedProcess:
    """``sicsrec fit`` of a tiny model; in its own process where it is to be killed (the runs it is
    compared with may run in this one: the same seed gives the same steps either way)."""
    callbacks = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(tmp_path / (checkpoints or name)),
                "every_n_train_steps": 1,
                "save_last": True,
                "save_top_k": 0,
            },
        }
    ]
    if kill_at is not None:
        callbacks.append({"class_path": "tests.test_resume.KillAt", "init_args": {"step": kill_at, "sig": sig}})
    cfg = {
        "seed_everything": seed,
        "trainer": {
            "accelerator": "cpu",
            "max_epochs": 3,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 1,
            "callbacks": callbacks,
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path), "name": "runs", "version": name},
            },
        },
        "model": {
            "class_path": "sicsrec.modules.Stage1Module",
            "init_args": {
                "hidden_size": 16,
                "inner_size": 16,
                "num_layers": 1,
                "dropout": 0.3,
                "attn_dropout": 0.3,
                "use_content": False,
            },
        },
        "data": {
            "class_path": "sicsrec.data.SequenceDataModule",
            "init_args": {"root": str(root), "max_len": 10, "batch_size": 512},
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    if in_process:
        with one_thread():  # as the subprocesses run (OMP_NUM_THREADS=1): the same steps bit for bit
            main(["fit", "--config", str(path), *extra])
        return subprocess.CompletedProcess([], 0, "", "")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "sicsrec.cli", "fit", "--config", str(path), *extra],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def metrics(tmp_path: Path, name: str) -> dict[str, float]:
    report = json.loads((tmp_path / "runs" / name / "metrics.json").read_text())
    return {k: v for k, v in report.items() if k.startswith("test/")}


def step_losses(tmp_path: Path, name: str) -> dict[int, str]:
    with open(tmp_path / "runs" / name / "metrics.csv") as f:
        return {int(r["step"]): r["train/loss_step"] for r in csv.DictReader(f) if r.get("train/loss_step")}


@pytest.fixture(scope="module")
def baselines(generated, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    for name, seed in (("whole", 1), ("other_seed", 2)):
        fit(tmp, generated, name, seed, in_process=True)
    return tmp


@pytest.mark.slow
def test_killed_fit_resumes_with_ckpt_path_last_and_ends_like_an_uninterrupted_run(generated, baselines):
    """SIGKILL (an OOM killer); SIGTERM (a scheduler's notice) is the next test's stop."""
    tmp, sig = baselines, signal.SIGKILL
    whole = step_losses(tmp, "whole")
    per_epoch = len(whole) // 3
    assert per_epoch >= STEPS_PER_EPOCH_AT_LEAST
    kill_at = per_epoch + per_epoch // 2  # in the middle of the second epoch
    name = f"killed_{sig.name}"
    killed = fit(tmp, generated, name, 1, kill_at=kill_at, sig=int(sig))
    assert killed.returncode in (-int(sig), 128 + int(sig)) and not (tmp / "runs" / name / "metrics.json").exists()
    import torch

    last = torch.load(tmp / name / "last.ckpt", weights_only=True)  # tensors and plain values only
    assert {"SequenceDataModule", "callbacks"} <= set(last)
    resumed = fit(tmp, generated, f"resumed_{sig.name}", 1, "--ckpt_path", "last", checkpoints=name)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    # the resumed run trains on the batches the killed one had not, with the same dropout draws
    after = step_losses(tmp, f"resumed_{sig.name}")
    # SIGKILL lands after kill_at optimizer steps but before that step's checkpoint: the batch
    # logged as step kill_at - 1 is trained again
    start = kill_at - 1
    assert min(after) == start
    assert after == {s: v for s, v in whole.items() if s >= start}

    a, b, c = metrics(tmp, "whole"), metrics(tmp, f"resumed_{sig.name}"), metrics(tmp, "other_seed")
    resume_gap = max(abs(a[k] - b[k]) for k in a)
    seed_gap = max(abs(a[k] - c[k]) for k in a)
    print(f"largest metric difference: resumed vs whole {resume_gap:.2e}, seed 2 vs seed 1 {seed_gap:.2e}")
    assert resume_gap < seed_gap
    assert resume_gap == 0.0


def valid_rows(tmp_path: Path, name: str) -> list[tuple[int, str]]:
    with open(tmp_path / "runs" / name / "metrics.csv") as f:
        return [(int(r["epoch"]), r["valid/hr@10"]) for r in csv.DictReader(f) if r.get("valid/hr@10")]


@pytest.mark.slow
def test_a_run_resumed_in_its_own_folder_keeps_the_metrics_logged_before_the_stop(generated, baselines):
    """``sicsrec run`` resumes into the same version folder, where Lightning's CSV logger would
    delete ``metrics.csv``: the validation curve must still hold every epoch, once."""
    tmp, name = baselines, "same_folder"
    whole = step_losses(tmp, "whole")
    per_epoch = len(whole) // 3
    kill_at = 2 * per_epoch + per_epoch // 2  # in the middle of the third epoch: two validations done
    killed = fit(tmp, generated, name, 1, kill_at=kill_at, sig=int(signal.SIGTERM))
    assert killed.returncode == 128 + int(signal.SIGTERM), killed.stderr[-3000:]  # not "done" for a scheduler
    assert not (tmp / "runs" / name / "metrics.json").exists()
    before = valid_rows(tmp, name)
    assert [e for e, _ in before] == [0, 1]
    resumed = fit(tmp, generated, name, 1, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert valid_rows(tmp, name) == valid_rows(tmp, "whole")  # epochs 0, 1, 2 once each, same values
    assert step_losses(tmp, name) == whole  # no training step lost or repeated, the same dropout draws
    assert metrics(tmp, name) == metrics(tmp, "whole")
    report = json.loads((tmp / "runs" / name / "metrics.json").read_text())
    assert (
        report["resumed_from"].endswith("last.ckpt") and report["seconds_per_epoch"] is None
    )  # timing of part of a run
    assert json.loads((tmp / "runs" / "whole" / "metrics.json").read_text())["resumed_from"] is None
    main(["test", "--config", str(tmp / f"{name}.yaml"), "--ckpt_path", str(tmp / name / "last.ckpt")])
    assert valid_rows(tmp, name) == valid_rows(tmp, "whole")  # a later `test` in the same folder keeps the curve


def test_every_epoch_is_validated_once_at_its_end_though_its_number_of_batches_changes(generated, tmp_path):
    """Length-grouped batches are reshuffled every epoch, so the number of batches changes; a
    loader Lightning built once validated in the wrong place (early, or not at all) in the epochs
    whose count differed from the first epoch's."""
    L.seed_everything(1)
    dm = SequenceDataModule(root=str(generated), max_len=10, batch_size=100)
    dm.setup("fit")
    sampler = dm.train_dataloader().batch_sampler
    counts = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        counts.append(len(sampler))
    assert len(set(counts)) > 1, counts  # otherwise this test shows nothing

    fit(
        tmp_path,
        generated,
        "varying",
        1,
        "--data.init_args.batch_size",
        "100",
        "--trainer.max_epochs",
        "4",
        in_process=True,
    )
    with open(tmp_path / "runs" / "varying" / "metrics.csv") as f:
        validated = [(int(r["epoch"]), int(r["step"])) for r in csv.DictReader(f) if r.get("valid/hr@10")]
    print("batches per epoch:", counts, "validations (epoch, step):", validated)
    assert validated == [(e, s - 1) for e, s in enumerate(itertools.accumulate(counts))]
