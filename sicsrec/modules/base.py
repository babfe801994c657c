"""What every recommender stage shares: full-ranking validation/test, optimiser set-up."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from sicsrec.errors import ConfigError
from sicsrec.evaluation import Protocol, RankingMetrics


def parameter_groups(module: nn.Module) -> list[dict]:
    """Trainable parameters in two groups: weight decay applies to weights, not to biases and norms."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


class RecommenderModule(L.LightningModule):
    """Subclasses implement ``score(batch) -> (B, num_items + 1)`` and ``training_step``."""

    def __init__(self, protocol: Protocol, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None,
                 monitor: str = "valid/hr@10"):
        super().__init__()
        self.optimizer, self.scheduler, self.monitor = optimizer, scheduler, monitor
        self.valid_metrics = RankingMetrics(protocol=protocol)
        self.test_metrics = RankingMetrics(protocol=protocol)

    def score(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def build(self) -> None:
        """Create the networks once ``hparams.num_items`` and ``hparams.max_len`` are known."""
        raise NotImplementedError

    def bind_data(self, num_items: int, max_len: int) -> None:
        """Take the catalogue size and input length from the data; refuse a contradiction."""
        for name, value in (("num_items", num_items), ("max_len", max_len)):
            given = self.hparams.get(name)
            if given is not None and given != value:
                raise ConfigError(f"model.{name} is {given} but the data gives {value}: a checkpoint or config "
                                  f"made for other data (leave model.{name} unset to take it from the data)")
            self.hparams[name] = value
            self._hparams_initial[name] = value  # what loggers record: the values actually used
        if not self.built:
            self.build()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("hyper_parameters", {})
        for name in ("num_items", "max_len"):
            if saved.get(name) is not None and self.hparams.get(name) not in (None, saved[name]):
                raise ConfigError(f"the checkpoint was trained with {name}={saved[name]} but the data gives "
                                  f"{self.hparams[name]}: it belongs to another dataset or max_len")

    @property
    def built(self) -> bool:
        return any(True for _ in self.parameters())

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.bind_data(datamodule.num_items, datamodule.max_len)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.valid_metrics.update(batch["user"], self.score(batch), batch["target"], batch["history"])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.test_metrics.update(batch["user"], self.score(batch), batch["target"], batch["history"])

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Each user's scores over all items; the prediction writer keeps the top K."""
        return {"user": batch["user"], "scores": self.score(batch), "history": batch["history"]}

    def _log_metrics(self, metric: RankingMetrics, prefix: str) -> None:
        values = metric.compute()
        values.pop("users")
        self.log_dict({f"{prefix}/{k}": v for k, v in values.items()}, prog_bar=False)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.valid_metrics, "valid")

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer(parameter_groups(self))
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler(optimizer), "monitor": self.monitor}}
