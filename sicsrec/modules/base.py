"""What every recommender stage shares: full-ranking validation/test, optimiser set-up."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from sicsrec.compat import attached_trainer, record_hparam
from sicsrec.errors import ConfigError, TrainingError
from sicsrec.evaluation import Protocol, RankingMetrics
from sicsrec.nn.losses import Scoring, item_scores

# Hyperparameters renamed so that one name means one thing in every stage: old name → new name.
# A config that uses an old name gets a one-line error naming the new one; checkpoints saved under
# the old names are read under the new ones (``renamed_hparams``).
RENAMED = {
    "Stage1Module": {"temperature": "id_temperature", "alpha1": "contrastive_weight"},
    "Stage2Module": {
        "alpha": "contrastive_weight",
        "temperature": "content_temperature",
        "dropout": "decoder_dropout",
        "attn_dropout": "decoder_attn_dropout",
    },
}


# Hyperparameters removed (measured to do nothing, or moved): old name → what to do instead. A
# config that sets one gets a one-line error saying so.
REMOVED = {
    "Stage2Module": {
        "item_content": "items carry their content in the stage-1 ID encoder now (Stage1Module item_content)",
        "id_row_dropout": "it belongs to the stage-1 ID encoder now (Stage1Module id_row_dropout)",
        "unseen_negatives": "an item no training part holds is never a negative of the training softmax",
        "use_contrastive": "set contrastive_weight: 0 for no contrastive term",
    },
}


def renamed_hparams(class_name: str, hparams: dict) -> dict:
    """``hparams`` saved by an earlier sicsrec, under today's names."""
    renamed = RENAMED.get(class_name, {})
    return {renamed.get(key, key): value for key, value in hparams.items()}


def as_callable(spec):
    """A ``{"class_path", "init_args"}`` spec — an optimiser or scheduler default written so that
    ``--print_config`` shows it, or a network as a checkpoint's hyperparameters record it — as the
    callable LightningCLI makes of one (the class with those arguments bound); a callable (or None)
    stays as it is."""
    if not isinstance(spec, dict):
        return spec
    import functools
    import importlib

    module, _, name = spec["class_path"].rpartition(".")
    return functools.partial(getattr(importlib.import_module(module), name), **spec.get("init_args", {}))


def check_finite(module: L.LightningModule, loss: torch.Tensor) -> None:
    """Stop on a NaN/inf loss, naming the step and the last good checkpoint to resume from."""
    if torch.isfinite(loss):
        return
    trainer = attached_trainer(module)
    ckpt = ""
    if trainer is not None and trainer.checkpoint_callback is not None:
        ckpt = trainer.checkpoint_callback.last_model_path or trainer.checkpoint_callback.best_model_path
    raise TrainingError(
        f"training loss is {loss.item()} at epoch {module.current_epoch}, global step "
        f"{module.global_step}; last good checkpoint: {ckpt or 'none saved yet'} "
        "(lower the learning rate, or resume with --ckpt_path)"
    )


def parameter_groups(module: nn.Module, lr_of: Callable[[str], float | None] | None = None) -> list[dict]:
    """Trainable parameters grouped so that weight decay applies to weights, not to biases and norms
    (always these two groups first) and, with ``lr_of`` (parameter name → its learning rate, None:
    the optimizer's), by learning rate."""
    groups: dict[tuple[bool, float | None], list] = {(False, None): [], (True, None): []}
    for name, p in module.named_parameters():
        if p.requires_grad:
            no_decay = p.ndim < 2 or name.endswith(".bias")
            groups.setdefault((no_decay, lr_of(name) if lr_of else None), []).append(p)
    return [
        {"params": params, **({"weight_decay": 0.0} if no_decay else {}), **({"lr": lr} if lr is not None else {})}
        for (no_decay, lr), params in groups.items()
        if params or lr is None
    ]


class RecommenderModule(L.LightningModule):
    """Subclasses implement ``scores(batch) -> {view: (B, num_items + 1)}``, ``build`` and ``training_step``,
    and the retrieval view of the model: ``user_vectors``, ``item_vectors`` and ``scoring``.

    With one view (``main``) metrics are logged as ``valid/hr@10``; with several (stage 1's
    ``id`` and ``content`` encoders) as ``valid/id/hr@10`` …, and ``valid/hr@10`` is their mean.

    ``score`` (what ``predict``, ``recommend`` and ``export`` rank by) is the first view, computed as
    ``item_scores(user_vectors, item_vectors, *scoring)``: an exported item table searched exactly
    with a user vector gives the same ranking.
    """

    def __init__(
        self,
        protocol: Protocol,
        optimizer: OptimizerCallable,
        scheduler: LRSchedulerCallable | None,
        views: tuple[str, ...] = ("main",),
        monitor: str = "valid/hr@10",
    ):
        super().__init__()
        self.optimizer, self.scheduler = as_callable(optimizer), as_callable(scheduler)
        self.monitor, self.views = monitor, tuple(views)
        self.valid_metrics = nn.ModuleDict({v: RankingMetrics(protocol=protocol) for v in self.views})
        self.test_metrics = nn.ModuleDict({v: RankingMetrics(protocol=protocol) for v in self.views})

    def scores(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def user_vectors(self, batch: dict) -> torch.Tensor:
        """(B, D): one vector per history in ``batch["input"]``, what item vectors are scored against."""
        raise NotImplementedError

    def item_vectors(self) -> torch.Tensor:
        """(num_items + 1, D): the vectors user vectors are scored against (row 0 = padding)."""
        raise NotImplementedError

    def scoring(self) -> tuple[Scoring, float]:
        """How a user vector scores an item vector: ``dot``, or ``cosine`` divided by the temperature."""
        raise NotImplementedError

    def score(self, batch: dict) -> torch.Tensor:
        """The scores of the first view: what ``predict`` ranks by."""
        return self.rescore(item_scores(self.user_vectors(batch), self.item_vectors(), *self.scoring()), batch)

    def rescore(self, scores: torch.Tensor, batch: dict) -> torch.Tensor:
        """Scores that the item vectors cannot give (e.g. of items training never saw, from the
        histories being ranked: :meth:`bind_histories`); by default the vectors' own."""
        return scores

    def bind_histories(self, histories: list | None, rows=None) -> None:
        """Take the histories being ranked together (internal ids), for :meth:`rescore`, and the
        rows fitted for that split's never-seen items (``rows``: models that have them)."""

    def bind_features(self, datamodule) -> None:
        """Modules that read item features take them here (they are data, not parameters)."""

    def build(self) -> None:
        """Create the networks once ``hparams.num_items`` and ``hparams.max_len`` are known."""
        raise NotImplementedError

    def bind_data(self, num_items: int, max_len: int) -> None:
        """Take the catalogue size and input length from the data; refuse a contradiction."""
        for name, value in (("num_items", num_items), ("max_len", max_len)):
            given = self.hparams.get(name)
            if given is not None and given != value:
                raise ConfigError(
                    f"model.{name} is {given} but the data gives {value}: a checkpoint or config "
                    f"made for other data (leave model.{name} unset to take it from the data)"
                )
            record_hparam(self, name, value)  # loggers record the values actually used
        if not self.built:
            self.build()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {})
        for name in ("num_items", "max_len"):
            if saved.get(name) is not None and self.hparams.get(name) not in (None, saved[name]):
                raise ConfigError(
                    f"the checkpoint was trained with {name}={saved[name]} but the data gives "
                    f"{self.hparams[name]}: it belongs to another dataset or max_len"
                )

    @property
    def built(self) -> bool:
        return any(True for _ in self.parameters())

    def setup(self, stage: str) -> None:
        datamodule = getattr(attached_trainer(self), "datamodule", None)
        if datamodule is not None:
            self.bind_features(datamodule)
            self.bind_data(datamodule.num_items, datamodule.max_len)
        if self.hparams.get("compile") and not getattr(self, "_compiled", False):
            for network in self.networks():
                network.compile(dynamic=True)  # in place: parameter names (and checkpoints) unchanged
            self._compiled = True

    def networks(self) -> list[nn.Module]:
        """The networks ``compile: true`` compiles."""
        return []

    def parameter_counts(self) -> dict[str, int | float]:
        """What a run dashboard should show about the model's size; stages add their own."""
        return {
            "parameters/trainable": sum(p.numel() for p in self.parameters() if p.requires_grad),
            "parameters/total": sum(p.numel() for p in self.parameters()),
        }

    def on_fit_start(self) -> None:
        counts = self.parameter_counts()
        for logger in self.loggers:
            logger.log_hyperparams(counts)

    def _update(self, metrics: nn.ModuleDict, batch: dict) -> None:
        for view, scores in self.scores(batch).items():
            metrics[view].update_batch(batch, scores)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._update(self.valid_metrics, batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._update(self.test_metrics, batch)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Each user's scores over all items; the prediction writer keeps the top K."""
        return {"user": batch["user"], "scores": self.score(batch), "history": batch["history"]}

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, torch.Tensor]:
        """Validation metrics over ``loader`` outside Lightning's loop (e.g. before any training step)."""
        was_training = self.training
        self.eval()
        self.on_validation_epoch_start()
        for batch in loader:
            trainer = attached_trainer(self)
            batch = trainer.strategy.batch_to_device(batch) if trainer is not None else batch
            self._update(self.valid_metrics, batch)
        self.train(was_training)
        return self._compute_metrics(self.valid_metrics, "valid")

    def _compute_metrics(self, metrics: nn.ModuleDict, prefix: str) -> dict[str, torch.Tensor]:
        logged = {}
        for view, metric in metrics.items():
            values = metric.compute()
            values.pop("users")
            tag = prefix if len(self.views) == 1 else f"{prefix}/{view}"
            logged.update({f"{tag}/{k}": v for k, v in values.items()})
            metric.reset()
        if len(self.views) > 1:
            logged[f"{prefix}/hr@10"] = sum(logged[f"{prefix}/{v}/hr@10"] for v in self.views) / len(self.views)
        return logged

    def _log_metrics(self, metrics: nn.ModuleDict, prefix: str) -> None:
        self.log_dict(self._compute_metrics(metrics, prefix), sync_dist=True)  # equal on every rank (gathered)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.valid_metrics, "valid")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    def parameter_lr(self, name: str) -> float | None:
        """A parameter's own learning rate; None: the optimizer's (every parameter, unless a stage says)."""
        return None

    def configure_optimizers(self):
        optimizer = self.optimizer(parameter_groups(self, self.parameter_lr))
        if self.scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler(optimizer), "monitor": self.monitor},
        }
