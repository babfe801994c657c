"""Every place sicsrec reaches into Lightning's internals, one function each, with the Lightning
versions they were checked against. An upgrade that moves one of them fails here — and in
tests/test_compat.py, which exercises each against the installed Lightning — not silently
somewhere in a training run. Outside this module, sicsrec uses Lightning's public API only
(and one documented LightningCLI hook, ``_parse_ckpt_path``, whose presence is checked here too).
"""

from __future__ import annotations

import warnings

import lightning

CHECKED = ("2.5", "2.6")  # major.minor versions these functions were tested on


def unchecked_version(version: str = lightning.__version__) -> str | None:
    """A warning text when ``version`` is not one these functions were checked against."""
    if ".".join(version.split(".")[:2]) in CHECKED:
        return None
    return (
        f"sicsrec was checked with Lightning {', '.join(CHECKED)}.x; {version} is installed: "
        "run tests/test_compat.py before trusting resumed runs, W&B set-up or stage-2 checkpointing"
    )


def cli_hooks_present() -> bool:
    """The private LightningCLI hook ``SicsrecCLI`` overrides (to build the model the config
    describes instead of the checkpoint's saved arguments) still exists."""
    from lightning.pytorch.cli import LightningCLI

    return callable(getattr(LightningCLI, "_parse_ckpt_path", None))


_message = unchecked_version()
if _message:
    warnings.warn(_message, stacklevel=2)


def attached_trainer(module):
    """The module's trainer, or None — ``module.trainer`` raises when none is attached."""
    return module._trainer


def record_hparam(module, name: str, value) -> None:
    """Set a hyperparameter the module learns from the data, also where loggers read the initial
    values from (``hparams_initial``), so dashboards show what was actually used."""
    module.hparams[name] = value
    module._hparams_initial[name] = value


def distributed_sampler_requested(trainer) -> bool:
    """Whether Lightning will inject a DistributedSampler into the loaders."""
    return bool(getattr(trainer._accelerator_connector, "use_distributed_sampler", False))


def batches_done(trainer) -> int:
    """Training batches processed in the current epoch."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def epochs_completed(trainer) -> int:
    return int(trainer.fit_loop.epoch_progress.current.completed)


def set_best_checkpoint(callback, path: str, score) -> None:
    """Enter ``path`` with ``score`` into a ModelCheckpoint as its best (and only) kept model."""
    callback.best_k_models = {path: score}
    callback.best_model_path = callback.kth_best_model_path = path
    callback.best_model_score = callback.kth_value = score


def set_early_stopping_best(callback, score) -> None:
    callback.best_score = score


def csv_rows(logger) -> list[dict]:
    """The metric rows a CSVLogger holds in memory (not yet written)."""
    return logger.experiment.metrics


def put_csv_rows_first(logger, rows: list[dict]) -> None:
    """Put ``rows`` before the rows a CSVLogger holds and write its metrics.csv."""
    writer = logger.experiment
    writer.metrics = list(rows) + writer.metrics
    writer.save()


def wandb_init_kwargs(logger) -> dict:
    """The arguments a WandbLogger will pass to ``wandb.init`` (mutable until the run starts)."""
    return logger._wandb_init
