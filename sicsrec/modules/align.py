"""Alignment SFT: fine-tune the text and image encoders on LLM-judged item pairs.

Three InfoNCE tasks with in-batch negatives share temperature τ: text-to-text (target title ↔
chosen title), image-to-image (target cover ↔ chosen cover) and text-to-image (an item's title
↔ its own cover, symmetric). A modality that is absent drops its terms. Each encoder is followed
by a trained projection head into a shared, L2-normalised space; of the encoders themselves only
the top ``top_k_layers`` blocks train (``trainable: top_k``), or LoRA adapters (``trainable: lora``).
"""

from __future__ import annotations

import logging
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from sicsrec.content.encoders import ImageEncoder, ProjectionHead, TextEncoder
from sicsrec.errors import ConfigError
from sicsrec.modules.base import as_callable, check_finite, parameter_groups
from sicsrec.nn.lora import inject_lora
from sicsrec.objectives import alignment_objective

log = logging.getLogger(__name__)

# BERT-like text models' attention and feed-forward linears (1×1 convolutions are not wrapped)
LORA_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
OPTIMIZER = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 5.0e-5, "weight_decay": 0.01}}


def _encoder(kind, value):
    if value is None or isinstance(value, nn.Module):
        return value
    return kind(**value)


def _init_args(encoder: nn.Module | None) -> dict | None:
    return None if encoder is None else dict(encoder.init_args)


class AlignModule(L.LightningModule):
    """Args:
    text: text encoder (null: no text modality).
    image: image encoder (null: no image modality).
    proj_dim: size of the shared space.
    temperature: τ of the three InfoNCE terms.
    weight_t2t, weight_i2i, weight_t2i: loss weights.
    trainable: ``top_k`` (top blocks of each encoder), ``lora`` (peft adapters), ``all`` or ``heads``.
    top_k_layers: blocks trained per encoder with ``top_k``.
    lora_rank, lora_alpha, lora_dropout: LoRA settings.
    lora_targets: module-name suffixes LoRA wraps (default: attention and feed-forward linears
        of BERT-like text models; 1×1 convolutions are not wrapped).
    optimizer, scheduler: callables; parameter groups are kept.
    """

    def __init__(
        self,
        text: TextEncoder | None = None,
        image: ImageEncoder | None = None,
        proj_dim: int = 64,
        temperature: float = 0.07,
        weight_t2t: float = 1.0,
        weight_i2i: float = 1.0,
        weight_t2i: float = 1.0,
        trainable: Literal["top_k", "lora", "all", "heads"] = "top_k",
        top_k_layers: int = 2,
        lora_rank: int = 8,
        lora_alpha: int = 16,
        lora_dropout: float = 0.0,
        lora_targets: tuple[str, ...] = LORA_TARGETS,
        optimizer: OptimizerCallable = OPTIMIZER,
        scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        self.text, self.image = _encoder(TextEncoder, text), _encoder(ImageEncoder, image)
        if self.text is None and self.image is None:
            raise ConfigError("align needs a text or an image encoder")
        self.save_hyperparameters(ignore=["text", "image", "optimizer", "scheduler"])
        self.hparams["text"], self.hparams["image"] = _init_args(self.text), _init_args(self.image)
        self.text_head = ProjectionHead(self.text.dim, proj_dim) if self.text else None
        self.image_head = ProjectionHead(self.image.dim, proj_dim) if self.image else None
        self.optimizer, self.scheduler = as_callable(optimizer), scheduler
        self._set_trainable()
        self.train()  # transformers' from_pretrained leaves models in eval mode

    def setup(self, stage: str) -> None:
        """A catalogue without covers leaves the image encoder out (its terms would have no pairs):
        the shipped config names both encoders, and the data decides which modalities there are."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if self.image is not None and datamodule is not None and not getattr(datamodule, "has_images", True):
            log.info("alignment: no item of this catalogue has a cover, so the image encoder is left out")
            self.image = self.image_head = None
            self.hparams["image"] = None
            if self.text is None:
                raise ConfigError("align needs a text encoder for a catalogue without covers")

    def train(self, mode: bool = True):
        """Train mode, except batch norms with frozen weights: their running statistics stay
        the pretrained ones (small cover batches would otherwise drift them)."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
                m.eval()
        return self

    def _set_trainable(self) -> None:
        h = self.hparams
        for enc in (self.text, self.image):
            if enc is None:
                continue
            enc.requires_grad_(h.trainable == "all")
            if h.trainable == "top_k" and h.top_k_layers > 0:
                for block in enc.layers()[-h.top_k_layers :]:
                    block.requires_grad_(True)
            elif h.trainable == "lora":
                enc.requires_grad_(False)
        if h.trainable == "lora":
            encoders = {enc.name: enc.model for enc in (self.text, self.image) if enc is not None}
            inject_lora(encoders, list(h.lora_targets), h.lora_rank, h.lora_alpha, h.lora_dropout)
            for name, p in self.named_parameters():
                if name.startswith(("text.", "image.")):
                    p.requires_grad_("lora_" in name)
        # A transformer's pooler never reaches a loss (token states are pooled by TextEncoder):
        # left trainable, DDP would stop on parameters without gradients.
        pooler = getattr(getattr(self.text, "model", None), "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)

    def merged_encoders(self) -> tuple[TextEncoder | None, ImageEncoder | None]:
        """The encoders with LoRA folded into their weights (no-op otherwise), for feature extraction."""
        from peft.tuners.lora import LoraLayer

        for m in self.modules():
            if isinstance(m, LoraLayer) and not m.merged:
                m.merge()
        return self.text, self.image

    # ---- embeddings -------------------------------------------------------------------------
    def embed_text(self, titles: list[str]) -> torch.Tensor:
        tokens = {k: v.to(self.device) for k, v in self.text.tokenize(titles).items()}
        return self.text_head(self.text(**tokens))

    def embed_image(self, images) -> torch.Tensor:
        return self.image_head(self.image(self.image.preprocess(images).to(self.device)))

    # ---- training ---------------------------------------------------------------------------
    def embedding_pairs(self, batch: dict) -> dict[str, tuple]:
        """The embedding pairs of each task this batch can form: ``(a, b, a_ids, b_ids)``."""
        h, out = self.hparams, {}
        if self.text is not None and h.weight_t2t > 0:
            a, b = self.embed_text(batch["target_titles"]), self.embed_text(batch["chosen_titles"])
            out["t2t"] = (a, b, batch["target"], batch["chosen"])
        if self.image is not None and batch.get("pair_has_images") is not None and batch["pair_has_images"].any():
            keep = batch["pair_has_images"]
            if h.weight_i2i > 0 and keep.sum() > 1:
                imgs_a = [im for im, k in zip(batch["target_images"], keep) if k]
                imgs_b = [im for im, k in zip(batch["chosen_images"], keep) if k]
                out["i2i"] = (
                    self.embed_image(imgs_a),
                    self.embed_image(imgs_b),
                    batch["target"][keep],
                    batch["chosen"][keep],
                )
        if self.text is not None and self.image is not None and h.weight_t2i > 0 and len(batch["items"]) > 1:
            t, i = self.embed_text(batch["item_titles"]), self.embed_image(batch["item_images"])
            out["t2i"] = (t, i, batch["items"], batch["items"])
        return out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        h = self.hparams
        weights = {"t2t": h.weight_t2t, "i2i": h.weight_i2i, "t2i": h.weight_t2i}
        parts = alignment_objective(self.embedding_pairs(batch), weights, h.temperature)
        if not parts:
            raise ConfigError("no loss term applies to this batch: check the modalities and weights")
        loss = parts.pop("loss")
        check_finite(self, loss)
        n = len(batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v for k, v in parts.items()}, batch_size=n)
        return loss

    # ---- validation: retrieval on held-out data --------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """One batch holds the whole held-out set (built by the DataModule)."""
        metrics = {}
        if self.text is not None and len(batch["target"]):
            table = torch.cat(
                [self.embed_text(batch["all_titles"][i : i + 256]) for i in range(0, len(batch["all_titles"]), 256)]
            )
            query = table[batch["target"] - 1]
            scores = query @ table.T
            scores[torch.arange(len(query)), batch["target"] - 1] = float("-inf")  # not itself
            rank = (scores > scores.gather(1, (batch["chosen"] - 1)[:, None])).sum(1)
            metrics["t2t_recall@10"] = (rank < 10).float().mean()
        if self.text is not None and self.image is not None and len(batch["items"]) > 1:
            t, i = self.embed_text(batch["item_titles"]), self.embed_image(batch["item_images"])
            scores = t @ i.T
            rank = (scores > scores.diagonal()[:, None]).sum(1)
            metrics["t2i_recall@10"] = (rank < 10).float().mean()
            metrics["t2i_chance@10"] = torch.tensor(min(1.0, 10 / len(batch["items"])))
        if metrics:
            main = [v for k, v in metrics.items() if k in ("t2t_recall@10", "t2i_recall@10")]
            metrics["recall@10"] = torch.stack(main).mean()
            self.log_dict({f"valid/{k}": v for k, v in metrics.items()}, batch_size=1, sync_dist=True)

    def configure_optimizers(self):
        optimizer = self.optimizer(parameter_groups(self))
        if self.scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler(optimizer), "monitor": "valid/recall@10"},
        }
