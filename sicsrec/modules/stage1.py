"""Stage one: pre-training the ID-modality and content-modality sequence encoders, apart.

Each encoder has its own loss and its own parameters, so neither loss reaches the other
encoder: the ID encoder learns from softmax cross-entropy over the item-ID table, the content
encoder from next-item prediction against the content vectors of all items (cosine / τ) plus
α₁ · the content-aware contrastive loss.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from sicsrec.compat import record_hparam
from sicsrec.errors import ConfigError
from sicsrec.evaluation import Protocol
from sicsrec.modules.base import RecommenderModule, as_callable, check_finite
from sicsrec.nn.content_encoder import ContentEncoder
from sicsrec.nn.id_encoder import IDEncoder
from sicsrec.nn.losses import Scoring, item_scores
from sicsrec.objectives import stage1_objective

OPTIMIZER = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001}}
# Sequence encoders given in a config by class_path + init_args (the networks of sicsrec/nn or your
# own): an ID encoder is built as ``cls(num_items, max_len, ...)`` (contract: sicsrec/nn/gru_encoder.py),
# a content encoder as ``cls(feature_dims, max_len, ...)`` (contract: sicsrec/nn/content_encoder.py).
IDEncoderFactory = Callable[[int, int], nn.Module]
ContentEncoderFactory = Callable[[dict[str, int], int], nn.Module]


def build_encoders(h: dict[str, Any]) -> tuple[nn.Module | None, nn.Module | None]:
    """The stage-1 networks that the hyperparameters ``h`` describe (a Stage1Module's, or those a
    stage-1 checkpoint saved): each encoder as given (``id_encoder``, ``content_encoder``), else
    the SASRec-style Transformer of the shape arguments."""
    shape = dict(
        hidden_size=h["hidden_size"],
        inner_size=h["inner_size"],
        num_layers=h["num_layers"],
        num_heads=h["num_heads"],
        dropout=h["dropout"],
        attn_dropout=h["attn_dropout"],
        layer_norm_eps=h["layer_norm_eps"],
        init_std=h["init_std"],
        activation=h["activation"],
    )
    id_encoder = content_encoder = None
    if h["use_id"]:
        factory = as_callable(h.get("id_encoder")) or partial(IDEncoder, **shape)
        content = {}
        if h.get("item_content"):
            if h.get("id_encoder") is not None:
                raise ConfigError("item_content needs the SASRec ID encoder (id_encoder: null)")
            content = dict(feature_dims=dict(h["feature_dims"]), id_row_dropout=h["id_row_dropout"])
        id_encoder = factory(h["num_items"], h["max_len"], **content)
    if h["use_content"]:
        factory = as_callable(h.get("content_encoder")) or partial(ContentEncoder, **shape)
        content_encoder = factory(dict(h["feature_dims"]), h["max_len"])
    return id_encoder, content_encoder


class FeatureTable:
    """Mixin for modules that hold cached item features as non-persistent buffers (data, not weights)."""

    def reads_features(self) -> bool:
        return bool(self.hparams.get("use_content", True) or self.hparams.get("item_content"))

    def bind_features(self, datamodule) -> None:
        if not self.reads_features():
            return
        # which items occur in some user's training part: data, like the features
        self.seen_items = datamodule.train_item_counts().to(self.device) > 0
        values, masks = datamodule.item_features()
        dims = {m: int(v.shape[1]) for m, v in values.items()}
        given = self.hparams.get("feature_dims")
        if given is not None and dict(given) != dims:
            raise ConfigError(f"the model was built for features {dict(given)} but the data gives {dims}")
        record_hparam(self, "feature_dims", dims)
        for m in dims:
            self.register_buffer(f"features_{m}", values[m].float(), persistent=False)
            self.register_buffer(f"mask_{m}", masks[m], persistent=False)

    _eval_table: torch.Tensor | None = None

    def feature_inputs(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The cached features and presence masks of every item, per modality."""
        names = list(self.hparams.feature_dims or {})
        if not names or not hasattr(self, f"features_{names[0]}"):
            raise ConfigError("item features are not loaded: run the model through a DataModule with data.features")
        return {m: getattr(self, f"features_{m}") for m in names}, {m: getattr(self, f"mask_{m}") for m in names}

    def id_items(self, encoder: nn.Module) -> torch.Tensor:
        """The ID encoder's item vectors, read as input and scored against: its ID rows, or each
        item's ID row plus the learned map of its content (``item_content``)."""
        if getattr(encoder, "content_map", None) is None:
            return encoder.item_embedding.weight
        return encoder.item_table(*self.feature_inputs(), seen=self.seen_items)

    def content_table(self, encoder: ContentEncoder) -> torch.Tensor:
        """The content vectors of all items. An evaluation pass computes them once and reuses them
        for every batch (the weights do not change within it; the cache is cleared when a validation,
        test or predict epoch starts); training recomputes them per step."""
        evaluating = not self.training and not torch.is_grad_enabled()
        if evaluating and self._eval_table is not None:
            return self._eval_table
        table = encoder.item_vectors(*self.feature_inputs())
        self._eval_table = table if evaluating else None
        return table

    def _forget_table(self) -> None:
        self._eval_table = None  # a new pass may run on other weights (a loaded checkpoint)

    def on_validation_epoch_start(self) -> None:
        self._forget_table()

    def on_test_epoch_start(self) -> None:
        self._forget_table()

    def on_predict_epoch_start(self) -> None:
        self._forget_table()


class Stage1Module(FeatureTable, RecommenderModule):
    """Args:
    num_items: catalogue size without padding; ``null`` takes it from the DataModule.
    max_len: longest input; ``null`` takes it from the DataModule.
    id_encoder: the ID sequence encoder by class_path + init_args (e.g. ``sicsrec.nn.GRUEncoder``);
        ``null``: SASRec (``sicsrec.nn.IDEncoder``) of the shape arguments below.
    content_encoder: the content sequence encoder likewise; ``null``: ``sicsrec.nn.ContentEncoder``
        of the shape arguments.
    hidden_size, inner_size, num_layers, num_heads: Transformer shape (both encoders).
    dropout: on embeddings and after attention/feed-forward blocks.
    attn_dropout: on attention probabilities.
    item_dropout: dropout on the ID item table used for scoring (training only). 0.5, SICSRec's:
        it regularises the ID table (the validation winner of stage 2's levers on all three Bili
        sets, 298d0da:docs/results.md §13); the plain ID encoder (``id.yaml``, SASRec) switches it off.
    layer_norm_eps, init_std: RecBole uses 1e-12 and N(0, 0.02).
    scoring: ID scoring: ``dot`` product with the item table, or ``cosine`` / ``id_temperature``.
    id_temperature: τ of ``cosine`` ID scoring (unused with ``dot``).
    use_id: train the ID-modality encoder.
    use_content: train the content-modality encoder (needs ``data.features``); ``false`` is the ID
        encoder alone (SASRec, ``id.yaml``).
    item_content: the ID encoder's item vectors (input and scoring) carry the items' content: ID row
        + a learned map of the standardised features (``sicsrec.nn.IDEncoder.item_table``; needs
        ``data.features``); an item no training part holds is scored through its content alone, and
        is no negative of the training softmax.
    id_row_dropout: with ``item_content``, the share of items whose ID row is masked in a training step.
    content_temperature: τ of the content encoder's next-item loss and contrastive loss.
    contrastive_weight: weight of the content-aware contrastive loss (α₁ of the paper).
    feature_dims: set from the data's features (printed for the record; leave null).
    compile: ``torch.compile`` the encoders (dynamic shapes: batches vary in length).
    protocol: ``recbole`` (history not masked) or ``ninerec`` (history masked) at evaluation.
    optimizer, scheduler: callables; parameter groups (no decay on biases/norms) are kept.
    """

    def __init__(
        self,
        num_items: int | None = None,
        max_len: int | None = None,
        id_encoder: IDEncoderFactory | None = None,
        content_encoder: ContentEncoderFactory | None = None,
        hidden_size: int = 256,
        inner_size: int = 256,
        num_layers: int = 2,
        num_heads: int = 2,
        dropout: float = 0.5,
        attn_dropout: float = 0.5,
        item_dropout: float = 0.5,
        layer_norm_eps: float = 1e-12,
        init_std: float = 0.02,
        activation: Literal["gelu", "relu", "silu"] = "gelu",
        scoring: Scoring = "dot",
        id_temperature: float = 1.0,
        use_id: bool = True,
        use_content: bool = True,
        item_content: bool = False,
        id_row_dropout: float = 0.0,
        content_temperature: float = 0.05,
        contrastive_weight: float = 0.2,
        feature_dims: dict[str, int] | None = None,
        compile: bool = False,
        protocol: Protocol = "recbole",
        optimizer: OptimizerCallable = OPTIMIZER,
        scheduler: LRSchedulerCallable | None = None,
    ):
        if not (use_id or use_content):
            raise ConfigError("stage 1 needs use_id or use_content")
        views = ("id", "content") if use_id and use_content else ("main",)
        super().__init__(protocol, optimizer, scheduler, views)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.id_encoder = self.content_encoder = None
        self.register_buffer("seen_items", None, persistent=False)  # set from the data (bind_features)
        reads = use_content or item_content
        if num_items is not None and max_len is not None and (feature_dims is not None or not reads):
            self.build()

    def networks(self) -> list:
        return [n for n in (self.id_encoder, self.content_encoder) if n is not None]

    def build(self) -> None:
        self.id_encoder, self.content_encoder = build_encoders(self.hparams)

    def id_table(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """What ID user vectors are scored against: the item vectors ``items`` (default
        :meth:`id_items`) with item dropout in training."""
        items = self.id_items(self.id_encoder) if items is None else items
        return F.dropout(items, self.hparams.item_dropout, self.training)

    def _view(self, name: str) -> str:
        return "main" if self.views == ("main",) else name

    def _encoders(self) -> list[str]:
        return [name for name, on in (("id", self.hparams.use_id), ("content", self.hparams.use_content)) if on]

    # The retrieval view is the first encoder's (``id`` when both are trained): what predict ranks by.
    def user_vectors(self, batch: dict, encoder: str | None = None) -> torch.Tensor:
        if (encoder or self._encoders()[0]) == "id":
            return self.id_encoder(batch["input"], last_only=True, table=self.id_items(self.id_encoder))
        return self.content_encoder(batch["input"], self.content_table(self.content_encoder), last_only=True)

    def item_vectors(self, encoder: str | None = None) -> torch.Tensor:
        if (encoder or self._encoders()[0]) == "id":
            return self.id_table()
        return self.content_table(self.content_encoder)

    def scoring(self, encoder: str | None = None) -> tuple[Scoring, float]:
        h = self.hparams
        return (
            (h.scoring, h.id_temperature)
            if (encoder or self._encoders()[0]) == "id"
            else ("cosine", h.content_temperature)
        )

    def scores(self, batch: dict) -> dict[str, torch.Tensor]:
        return {
            self._view(e): item_scores(self.user_vectors(batch, e), self.item_vectors(e), *self.scoring(e))
            for e in self._encoders()
        }

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        h = self.hparams
        n = int((batch["target"] > 0).sum())
        id_items = self.id_items(self.id_encoder) if h.use_id else None  # one draw of ID-row dropout per step
        content_table = self.content_table(self.content_encoder) if h.use_content else None
        losses = stage1_objective(
            batch["target"],
            self.id_encoder(batch["input"], table=id_items) if h.use_id else None,
            self.id_table(id_items) if h.use_id else None,
            self.content_encoder(batch["input"], content_table) if h.use_content else None,
            content_table,
            h.scoring,
            h.id_temperature,
            h.content_temperature,
            h.contrastive_weight,
            # an item no training part holds is no negative of an ID encoder that scores it through
            # its content: pushed down at every step, the content map would learn to bury new items
            self.seen_items if h.item_content else None,
        )
        if h.use_id:
            self.log("train/id/loss", losses["id"], batch_size=n)
        if h.use_content:
            self.log_dict(
                {"train/content/loss": losses["content"], "train/content/contrastive": losses["contrastive"]},
                batch_size=n,
            )
        loss = losses["loss"]
        check_finite(self, loss)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n)
        return loss
