"""Stage one: pre-training the sequence encoders. Today: the ID-modality encoder (SASRec)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from sicsrec.evaluation import Protocol
from sicsrec.modules.base import RecommenderModule
from sicsrec.nn.id_encoder import IDEncoder
from sicsrec.nn.losses import Scoring, full_softmax_ce, item_scores


class Stage1Module(RecommenderModule):
    """ID-modality sequence encoder trained with softmax cross-entropy over all items.

    Args:
        num_items: catalogue size without padding; ``null`` takes it from the DataModule.
        max_len: longest input; ``null`` takes it from the DataModule.
        hidden_size, inner_size, num_layers, num_heads: Transformer shape.
        dropout: on embeddings and after attention/feed-forward blocks.
        attn_dropout: on attention probabilities.
        item_dropout: dropout on the item table used for scoring (training only).
        layer_norm_eps, init_std: RecBole uses 1e-12 and N(0, 0.02).
        scoring: ``dot`` product with the item table, or ``cosine`` divided by ``temperature``.
        protocol: ``recbole`` (history not masked) or ``ninerec`` (history masked) at evaluation.
        optimizer, scheduler: callables; parameter groups (no decay on biases/norms) are kept.
    """

    def __init__(self, num_items: int | None = None, max_len: int | None = None, hidden_size: int = 256, inner_size: int = 256,
                 num_layers: int = 2, num_heads: int = 2, dropout: float = 0.5, attn_dropout: float = 0.5,
                 item_dropout: float = 0.0, layer_norm_eps: float = 1e-12, init_std: float = 0.02,
                 activation: Literal["gelu", "relu", "silu"] = "gelu", scoring: Scoring = "dot", temperature: float = 1.0,
                 protocol: Protocol = "recbole",
                 optimizer: OptimizerCallable = torch.optim.Adam,
                 scheduler: LRSchedulerCallable | None = None):
        super().__init__(protocol, optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.item_dropout, self.scoring, self.temperature = item_dropout, scoring, temperature
        if num_items is not None and max_len is not None:
            self.build()

    def build(self) -> None:
        h = self.hparams
        self.id_encoder = IDEncoder(h.num_items, h.hidden_size, h.inner_size, h.num_layers, h.num_heads, h.dropout,
                                    h.attn_dropout, h.max_len, h.layer_norm_eps, h.init_std, h.activation)

    def _item_table(self) -> torch.Tensor:
        return F.dropout(self.id_encoder.item_embedding.weight, self.item_dropout, self.training)

    def score(self, batch: dict) -> torch.Tensor:
        user = self.id_encoder(batch["input"], last_only=True)
        return item_scores(user, self._item_table(), self.scoring, self.temperature)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        hidden = self.id_encoder(batch["input"])
        mask = batch["target"] > 0
        scores = item_scores(hidden[mask], self._item_table(), self.scoring, self.temperature)
        loss = full_softmax_ce(scores, batch["target"][mask])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {loss.item()} at global step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=int(mask.sum()))
        return loss
