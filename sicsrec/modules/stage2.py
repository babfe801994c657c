"""Stage two: LoRA tuning from the stage-1 checkpoint, with the mix-modality decoder and fusion.

The two encoders' Transformer blocks are frozen and peft LoRA adapters are injected into their
attention and feed-forward linears; the adapters train together with the decoder (causal
cross-attention: ID queries, content keys/values) and the fusion of the three last-position
states — and, in the method head, with the parts that carry item information (ID item table,
position tables, embedding LayerNorms, content projections). Loss: cross-entropy over the items
that occur in training + α · content-aware contrastive loss on the user vector (see ``head``).

An item no user's training part holds (a new upload, a held-out item) has an ID row that training
never fitted. When stage 1's ID encoder carries content (``item_content``) such an item is scored
through the learned map of its content. Otherwise it can borrow one (``cold_neighbours``): the
content-weighted mean of the rows of the seen items whose content is closest to its own, so it is
ranked through its content on the scale of the fitted rows. When the histories being ranked lead
to such an item — other users moved to it after training — its row can be fitted to those
users' last step (``new_item_fold_in``): once, after fitting, as a step that writes the rows beside
the checkpoint (``sicsrec fold-in``), which test, predict and serving then read — they fit nothing.
The items only earlier steps lead to are scored from the transitions into them
(``new_item_chain``; :mod:`sicsrec.nn.new_items`).

A stage-2 checkpoint holds only what stage 2 trained, and names its stage-1 checkpoint by path
and SHA-256; loading it rebuilds the stage-1 model from that file first (and refuses another one).

Without a stage-1 checkpoint the same model is trained in one stage (the "no stage 2" ablation):
both encoders are built fresh from ``encoders`` and train in full, without LoRA, together with
the decoder and fusion under the same loss.
"""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import AttributeDict, rank_zero_info
from torch import nn

from sicsrec.checkpoints import file_sha256
from sicsrec.compat import attached_trainer
from sicsrec.data.batching import pad
from sicsrec.errors import ConfigError
from sicsrec.evaluation import Protocol
from sicsrec.modules.base import RENAMED, RecommenderModule, check_finite, renamed_hparams
from sicsrec.modules.stage1 import FeatureTable, Stage1Module, build_encoders
from sicsrec.nn.attention import last_items
from sicsrec.nn.lora import inject_lora
from sicsrec.nn.losses import Scoring, item_scores
from sicsrec.nn.mix_decoder import Fusion, MixDecoder
from sicsrec.nn.new_items import NewItemChain, fold_in
from sicsrec.nn.sicsrec_network import SICSRecNetwork
from sicsrec.objectives import stage2_objective

LORA_TARGETS = ("query", "key", "value", "out", "dense_in", "dense_out")  # attention and feed-forward linears
# Adam with the reference's L2 λ (on weights; biases and norms are free of it, see parameter_groups).
# 1e-4, a tenth of stage 1's: stage 2 tunes a fitted model. Warmed up to 1e-3, validation HR@10 peaked
# within 2–4 epochs on Bili_Dance and Bili_Movie, then fell about 2 points as the rate rose; at 1e-4
# the peak is as high (Bili_Food and Bili_Dance, two seeds each) and the later epochs stay within
# half a point of it (docs/results.md, "What we tried").
OPTIMIZER = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.0001, "weight_decay": 0.01}}
# The learning rate rises from 1 % of the optimizer's to all of it over the first 10 epochs. Adam's
# first steps move every parameter by about the learning rate whatever its gradient (m / √v ≈ ±1):
# at the full rate they knock the pre-trained start off its fit (Bili_Food seed 2024: validation
# HR@10 25.29 → 24.52 in the first epoch) before tuning can improve on it; warmed up, tuning beats
# the untuned start on validation where it rarely did (298d0da:docs/results.md §21).
SCHEDULER = {
    "class_path": "torch.optim.lr_scheduler.LinearLR",
    "init_args": {"start_factor": 0.01, "end_factor": 1.0, "total_iters": 10},
}
# What carries item information in the stage-1 encoders (trained by the method head, beside LoRA):
# the ID item table, position tables, embedding LayerNorms and the content projections.
ITEM_PARTS = {"item_embedding", "content_map", "position_embedding", "norm", "projections"}
NOT_HPARAMS = {"self", "optimizer", "scheduler"}


def upgraded_key(key: str) -> str:
    """A stage-2 state-dict key of an earlier layout (the stage-1 module nested as ``stage1``; the
    networks held directly) under today's (``network.…``)."""
    key = key.removeprefix("stage1.")
    return f"network.{key}" if key.startswith(("id_encoder.", "content_encoder.", "decoder.", "fusion.")) else key


def stage1_hparams(given: dict[str, Any]) -> AttributeDict:
    """Stage-1 hyperparameters: ``given`` (a checkpoint's, or ``encoders``) over Stage1Module's defaults."""
    defaults = {
        k: p.default for k, p in inspect.signature(Stage1Module.__init__).parameters.items() if k not in NOT_HPARAMS
    }
    return AttributeDict({**defaults, **renamed_hparams("Stage1Module", given)})


def load_stage1(path: Path) -> tuple[AttributeDict, nn.Module, nn.Module]:
    """The stage-1 networks in ``path`` — ID and content encoder, built from its saved
    hyperparameters and loaded with its weights — and those hyperparameters."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    saved = checkpoint.get("hyper_parameters", {})
    if saved.get("_class_path", "sicsrec.modules.Stage1Module").rsplit(".", 1)[-1] != "Stage1Module" or (
        "state_dict" not in checkpoint
    ):
        raise ConfigError(f"{path} is not a stage-1 checkpoint")
    hparams = stage1_hparams({k: v for k, v in saved.items() if not k.startswith("_")})
    if not (hparams.use_id and hparams.use_content):
        raise ConfigError(f"{path} is not a full stage-1 model (use_id and use_content are needed)")
    id_encoder, content_encoder = build_encoders(hparams)
    for name, network in (("id_encoder", id_encoder), ("content_encoder", content_encoder)):
        network.load_state_dict(
            {k[len(name) + 1 :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(name + ".")}
        )
    return hparams, id_encoder, content_encoder


class Stage2Module(FeatureTable, RecommenderModule):
    """Args:
    stage1_checkpoint: the stage-1 checkpoint (ID + content encoders) to start from; ``null``:
        one-stage training (the "no stage 2" ablation) of encoders built from ``encoders``.
    encoders: Stage1Module arguments of those fresh encoders (``null``: its defaults).
    num_items, max_len, feature_dims: ``null`` takes them from the DataModule (must match stage 1).
    stage1_sha256: hash of the stage-1 checkpoint, recorded at the first fit; a later load of a
        different file under that path is an error.
    lora_rank, lora_alpha, lora_dropout: LoRA settings (peft).
    lora_targets: module-name suffixes LoRA wraps in both encoders.
    decoder_layers, decoder_heads: mix-modality decoder shape (hidden size = stage 1's).
    decoder_dropout, decoder_attn_dropout: the decoder's hidden and attention dropout.
    item_dropout: dropout on the ID item table at training; ``null``: stage 1's (the same in both stages).
    head: ``method`` (SICSRec): the ID, content and decoder states are fused into **one** user vector,
        scored against the ID item table as stage 1 scored it, and the contrastive term pulls that
        same vector towards the next item's content vector — so the ID-scored representation is
        aligned with content. Besides LoRA, the decoder and the fusion, the parts that carry item
        information train: the ID item table, both position tables and embedding LayerNorms, and
        the content projections. It starts as the stage-1 ID encoder.
        ``ensemble`` (a baseline): ``[ID part ; content part]`` scored against
        ``[ID table ; content table]``, starting from the sum of both stage-1 encoders' scores; only
        LoRA, decoder and fusion train, the contrastive term acts on the content part.
    cold_neighbours: k > 0: an item with no training occurrence borrows its ID row (the ID half of
        an ensemble's) from the k seen items with the closest content vectors, weighted by the
        softmax of their cosines over ``content_temperature``; 0: its own row (never fitted, or made
        of its content by stage 1's ``item_content``). Either way such an item is no negative of the
        training softmax: pushed down at every step, its row (or the content map) would learn to
        bury new items.
    skip_new_items: a never-seen item in a history being ranked is left out of what the encoders read
        (its ID row was only ever pushed down in training; its content neighbours' rows read worse
        still, 298d0da:docs/results.md §19); it stays in the history the chain and the exclusion of
        watched items look at. ``false``: it is read through its own row.
    new_item_fold_in: a never-seen item that the last step of the histories being ranked leads to
        (the test split's inputs; at predict time and in ``recommend``, the catalogue's sequences;
        not validation's, which chains them) gets the row that best predicts that step of every
        history under the model's softmax, starting from its borrowed row
        (:func:`sicsrec.nn.new_items.fold_in`); the row is an item vector like the others (``export``
        writes it). The rows are fitted once, after fitting (``sicsrec fit`` does it before its
        test; ``sicsrec fold-in`` for a checkpoint) and read from beside the checkpoint.
        ``false``: no rows are fitted or read; the chain scores every never-seen item.
    new_item_fold_in_weight: the fold-in's pull λ towards the borrowed row; ``null``: the one of
        :data:`sicsrec.nn.new_items.FOLD_IN_WEIGHTS` that 5-fold cross-validation over the fitted
        step's transitions chooses.
    new_item_chain: a never-seen item that only earlier steps of those histories lead to (all of
        them with ``new_item_fold_in: false``) is scored by the smoothed first-order chain over the
        histories' transitions, after the user's last item, on the scale of the model's softmax
        (:class:`sicsrec.nn.new_items.NewItemChain`); ``false``: by its row.
    contrastive_weight: weight of the content-aware contrastive loss (α of the paper).
    content_temperature: τ of the contrastive loss (content-vector similarities, as in stage 1).
    new_parts_lr: learning rate of what stage 2 adds — LoRA adapters, decoder, fusion, the content
        map — while the parts trained in stage 1 keep the optimizer's; ``null``: one rate for all.
    use_decoder: ``false``: the "no decoder" ablation (``contrastive_weight: 0``: no contrastive term).
    compile: ``torch.compile`` the encoders, decoder and fusion.
    protocol, optimizer: as in stage 1.
    scheduler: stepped once per epoch; the default warms the learning rate up over 10 epochs (see
        ``SCHEDULER``); ``null``: the optimizer's rate from the first step.
    """

    def __init__(
        self,
        stage1_checkpoint: str | None,
        encoders: dict[str, Any] | None = None,
        num_items: int | None = None,
        max_len: int | None = None,
        lora_rank: int = 4,
        lora_alpha: int = 8,
        lora_dropout: float = 0.0,
        lora_targets: tuple[str, ...] = LORA_TARGETS,
        decoder_layers: int = 1,
        decoder_heads: int = 2,
        decoder_dropout: float = 0.5,
        decoder_attn_dropout: float = 0.5,
        item_dropout: float | None = None,
        head: Literal["method", "ensemble"] = "method",
        cold_neighbours: int = 5,
        skip_new_items: bool = True,
        new_item_fold_in: bool = True,
        new_item_fold_in_weight: float | None = None,
        new_item_chain: bool = True,
        contrastive_weight: float = 0.2,
        content_temperature: float = 0.05,
        new_parts_lr: float | None = None,
        use_decoder: bool = True,
        feature_dims: dict[str, int] | None = None,
        stage1_sha256: str | None = None,
        compile: bool = False,
        protocol: Protocol = "recbole",
        optimizer: OptimizerCallable = OPTIMIZER,
        scheduler: LRSchedulerCallable | None = SCHEDULER,
    ):
        super().__init__(protocol, optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.stage1_hparams = self.network = None
        self.register_buffer("seen_items", None, persistent=False)  # set from the data (bind_features)
        # rows of never-seen items per split, fitted once (fold_in_splits) and handed back to the
        # model by whoever reads them from beside its checkpoint (the model reads no files)
        self.new_item_rows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        # bound with the histories being ranked (bind_histories): that split's rows and the chain
        self.fitted: tuple[torch.Tensor, torch.Tensor] | None = None
        self.chain: NewItemChain | None = None
        if num_items is not None and max_len is not None and feature_dims is not None:
            self.build()

    # ---- construction -------------------------------------------------------------------------
    def build(self) -> None:
        h = self.hparams
        if h.stage1_checkpoint is None:
            self.stage1_hparams, id_encoder, content_encoder = self._fresh_encoders()
        else:
            self.stage1_hparams, id_encoder, content_encoder = self._pretrained_encoders()
            inject_lora(
                {"ID encoder": id_encoder, "content encoder": content_encoder},
                list(h.lora_targets),
                h.lora_rank,
                h.lora_alpha,
                h.lora_dropout,
            )
            item_parts = ITEM_PARTS if h.head == "method" else set()
            for encoder in (id_encoder, content_encoder):
                for name, p in encoder.named_parameters():
                    p.requires_grad_("lora_" in name or name.split(".")[0] in item_parts)
        s = self.stage1_hparams
        decoder = (
            MixDecoder(
                s.hidden_size,
                s.inner_size,
                h.decoder_layers,
                h.decoder_heads,
                h.decoder_dropout,
                h.decoder_attn_dropout,
                s.layer_norm_eps,
                s.init_std,
                s.activation,
            )
            if h.use_decoder
            else None
        )
        # ensemble: the content part starts as stage 1 scored it, cosine / τ; method: the ID stream
        fusion = Fusion(
            s.hidden_size,
            3 if h.use_decoder else 2,
            2 if h.head == "ensemble" else 1,
            (1.0, 1.0 / s.content_temperature) if h.head == "ensemble" else None,
        )
        item_dropout = s.item_dropout if h.item_dropout is None else h.item_dropout
        self.network = SICSRecNetwork(
            id_encoder,
            content_encoder,
            decoder,
            fusion,
            h.head,
            item_dropout,
            h.cold_neighbours,
            h.content_temperature,
            h.skip_new_items,
        )

    def _pretrained_encoders(self) -> tuple[AttributeDict, nn.Module, nn.Module]:
        h = self.hparams
        path = Path(h.stage1_checkpoint)
        if not path.is_file():
            raise ConfigError(f"stage-1 checkpoint not found: {path}")
        digest = file_sha256(path)
        if h.stage1_sha256 is not None and h.stage1_sha256 != digest:
            raise ConfigError(
                f"{path} changed since this stage-2 model was trained (sha256 {digest[:12]} ≠ "
                f"{h.stage1_sha256[:12]}): point stage1_checkpoint to the original file"
            )
        self.hparams["stage1_sha256"] = digest
        s, id_encoder, content_encoder = load_stage1(path)
        for name in ("num_items", "max_len"):
            if s[name] != h[name]:
                raise ConfigError(f"stage 1 was trained with {name}={s[name]}, the data gives {h[name]}")
        if dict(s.feature_dims) != dict(h.feature_dims):
            raise ConfigError(f"stage 1 used features {dict(s.feature_dims)}, the data gives {dict(h.feature_dims)}")
        return s, id_encoder.requires_grad_(False), content_encoder.requires_grad_(False)

    def _fresh_encoders(self) -> tuple[AttributeDict, nn.Module, nn.Module]:
        h = self.hparams
        fixed = {"num_items", "max_len", "feature_dims", "use_id", "use_content"}
        old = set(RENAMED["Stage1Module"]) & set(h.encoders or {})
        if old:
            key = sorted(old)[0]
            raise ConfigError(f"model.encoders.{key} is now model.encoders.{RENAMED['Stage1Module'][key]}")
        if fixed & set(h.encoders or {}):
            raise ConfigError(f"model.encoders: {sorted(fixed & set(h.encoders))} come from the data, leave them out")
        s = stage1_hparams(
            {
                **(h.encoders or {}),
                "num_items": h.num_items,
                "max_len": h.max_len,
                "use_id": True,
                "use_content": True,
                "feature_dims": dict(h.feature_dims),
            }
        )
        unknown = set(h.encoders or {}) - set(s)
        if unknown:
            raise ConfigError(f"model.encoders: {sorted(unknown)} are not Stage1Module arguments")
        return (s, *build_encoders(s))

    def parameter_lr(self, name: str) -> float | None:
        if self.hparams.new_parts_lr is None or self.hparams.stage1_checkpoint is None:
            return None
        from_stage1 = name.startswith(("network.id_encoder.", "network.content_encoder.")) and "lora_" not in name
        return None if from_stage1 else self.hparams.new_parts_lr

    def networks(self) -> list:
        net = self.network
        return [n for n in (net.id_encoder, net.content_encoder, net.decoder, net.fusion) if n is not None]

    def parameter_counts(self) -> dict[str, int | float]:
        counts = super().parameter_counts()
        if self.hparams.stage1_checkpoint is None:
            return counts  # one-stage training: no LoRA
        for name, r in self.lora_report().items():
            counts[f"parameters/{name}/lora"] = r["lora"]
            counts[f"parameters/{name}/frozen"] = r["frozen"]
            counts[f"parameters/{name}/lora_share"] = round(r["share"], 5)
            rank_zero_info(
                f"LoRA in {name}: {r['lora']:,} parameters = {100 * r['share']:.2f} % of its "
                f"{r['frozen']:,} frozen ones"
            )
        return counts

    def lora_report(self) -> dict[str, dict[str, int | float]]:
        """LoRA parameters per encoder against the encoder's frozen base parameters."""
        out = {}
        for name in ("id_encoder", "content_encoder"):
            enc = getattr(self.network, name)
            lora = sum(p.numel() for n, p in enc.named_parameters() if "lora_" in n)
            base = sum(p.numel() for n, p in enc.named_parameters() if "lora_" not in n)
            out[name] = {"lora": lora, "frozen": base, "share": lora / base}
        return out

    # ---- model --------------------------------------------------------------------------------
    def scoring(self) -> tuple[Scoring, float]:
        """The one scoring of stage 2 — in training, validation, test, predict and export. ``method``:
        the ID table scored as stage 1 scored it (its ``scoring`` and ``id_temperature``); ``ensemble``:
        dot products with ``[ID table ; content table]``, the content part's 1/τ being in the fusion."""
        s = self.stage1_hparams
        return ("dot", 1.0) if self.hparams.head == "ensemble" else (s.scoring, s.id_temperature)

    def item_vectors(self) -> torch.Tensor:
        content = self.content_table(self.network.content_encoder)
        table = self.network.item_table(content, self.id_items(self.network.id_encoder), self.seen_items)
        if self.fitted is None:
            return table
        items, rows = self.fitted
        return table.index_copy(0, items, rows.to(table.dtype))

    def user_vectors(self, batch: dict) -> torch.Tensor:
        content = self.content_table(self.network.content_encoder)
        return self.network(batch["input"], content, self.id_items(self.network.id_encoder), seen=self.seen_items)

    def scores(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"main": self.score(batch)}

    def rescore(self, scores: torch.Tensor, batch: dict) -> torch.Tensor:
        return scores if self.chain is None else self.chain(scores, last_items(batch["input"]))

    def bind_histories(self, histories: list | None, rows: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Rank the never-seen items of ``histories``: those in ``rows`` (items, rows) by their
        fitted rows, the rest by the chain. Nothing is fitted here."""
        self.fitted = self.chain = None
        if histories is None or self.seen_items is None:
            return
        scored = self.seen_items  # items with a row the chain leaves alone
        if rows is not None and self.hparams.new_item_fold_in:
            self.fitted = (rows[0].to(self.device), rows[1].to(self.device))
            scored = scored.index_fill(0, self.fitted[0], True)
        if self.hparams.new_item_chain:
            self.chain = NewItemChain(histories, scored).to(self.device)

    @torch.no_grad()
    def fold_in_splits(self, datamodule, splits: tuple[str, ...] = ("test", "predict")) -> dict:
        """``{split: (items, rows)}``: the rows :meth:`fit_new_item_rows` fits on each split's
        histories (validation is never fitted: it chains its new items). What ``sicsrec fold-in``
        writes beside the checkpoint; ``{}`` when ``new_item_fold_in`` is off."""
        if not self.hparams.new_item_fold_in or self.seen_items is None:
            return {}
        rows = {split: self.fit_new_item_rows(datamodule.split_histories(split)) for split in splits}
        return {split: r for split, r in rows.items() if r is not None}

    @torch.no_grad()
    def fit_new_item_rows(self, histories: list, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(items, rows) for the never-seen items that the histories' last step leads to, fitted on
        that step of every history (its earlier items in, its last item out) from the rows the
        model has before any fit; None if there are none."""
        self.bind_histories(None)  # no rows of an earlier fit under the users or the table
        steps = [h for h in histories if len(h) > 1]
        targets = torch.tensor([int(h[-1]) for h in steps], dtype=torch.long, device=self.device)
        items = torch.unique(targets[~self.seen_items[targets]]) if len(steps) else targets
        if len(items) == 0:
            return None
        started = time.perf_counter()
        inputs = [h[:-1][-self.hparams.max_len :] for h in steps]
        users = torch.cat(
            [
                self.user_vectors({"input": pad(inputs[k : k + batch_size]).to(self.device)})
                for k in range(0, len(inputs), batch_size)
            ]
        )
        given = self.hparams.new_item_fold_in_weight
        rows, weight = fold_in(users, targets, self.item_vectors(), items, self.scoring(), weight=given)
        chosen = "given" if given is not None else "chosen by cross-validation"
        rank_zero_info(
            f"new_item_fold_in: {len(items)} never-seen items fitted on the last step of {len(steps):,} "
            f"histories (prior weight {weight:g}, {chosen}; {time.perf_counter() - started:.0f} s)"
        )
        return items, rows

    def bind_split(self, split: str, datamodule=None) -> None:
        """Bind the histories of ``split`` (``valid``, ``test`` or ``predict``) of ``datamodule`` —
        by default the attached trainer's — as that loop does, with that split's fitted rows: a
        script that scores a split outside Lightning binds its own split, never another's (the
        predict split's last steps are the test targets)."""
        datamodule = datamodule if datamodule is not None else getattr(attached_trainer(self), "datamodule", None)
        split_histories = getattr(datamodule, "split_histories", None)
        histories = split_histories(split) if split_histories is not None else None
        self.bind_histories(histories, self.new_item_rows.get(split))

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self.bind_split("valid")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.bind_split("test")

    def on_predict_epoch_start(self) -> None:
        super().on_predict_epoch_start()
        self.bind_split("predict")

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        h = self.hparams
        mask = batch["target"] > 0
        targets = batch["target"][mask]
        content = self.content_table(self.network.content_encoder)
        id_items = self.id_items(self.network.id_encoder)  # one draw of ID-row dropout per step
        users = self.network(batch["input"], content, id_items, all_positions=True)[mask]
        scores = item_scores(users, self.network.item_table(content, id_items, self.seen_items), *self.scoring())
        if self.seen_items is not None:
            scores = scores.masked_fill(~self.seen_items, float("-inf"))  # targets are always seen
        losses = stage2_objective(
            targets,
            scores,
            self.network.content_part(users),
            content,
            h.contrastive_weight,
            h.content_temperature,
        )
        n = int(mask.sum())
        if "contrastive" in losses:
            self.log("train/contrastive", losses["contrastive"], batch_size=n)
        check_finite(self, losses["loss"])
        self.log_dict({"train/loss": losses["loss"], "train/ce": losses["ce"]}, prog_bar=True, batch_size=n)
        return losses["loss"]

    # ---- checkpoints hold only what stage 2 trained -------------------------------------------
    def trained_keys(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self.trained_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        if self.hparams.stage1_checkpoint is not None:
            stage1 = Path(self.hparams.stage1_checkpoint).resolve()
            trainer = attached_trainer(self)
            folder = getattr(getattr(trainer, "checkpoint_callback", None), "dirpath", None)
            checkpoint["stage1_checkpoint"] = {
                "path": str(self.hparams.stage1_checkpoint),
                "absolute": str(stage1),
                # found again after the run folder moves (runs/ copied elsewhere, another machine)
                "from_checkpoint_folder": os.path.relpath(stage1, Path(folder).resolve()) if folder else None,
                "sha256": self.hparams.stage1_sha256,
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("stage1_checkpoint", {}).get("sha256")
        if saved is not None and self.hparams.stage1_sha256 not in (None, saved):
            raise ConfigError(
                f"this stage-2 checkpoint was trained on a stage-1 checkpoint with sha256 {saved[:12]}, "
                f"but {self.hparams.stage1_checkpoint} has {self.hparams.stage1_sha256[:12]}"
            )

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load a stage-2 state (trained parameters only) over the rebuilt stage-1 networks.
        Checkpoints of earlier layouts (``stage1.id_encoder.…``, ``decoder.…``) load too."""
        state_dict = {upgraded_key(k): v for k, v in state_dict.items()}
        missing = self.trained_keys() - set(state_dict)
        unexpected = set(state_dict) - {n for n, _ in self.named_parameters()}
        if strict and (missing or unexpected):
            raise ConfigError(
                f"stage-2 checkpoint does not fit this model: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}"
            )
        return super().load_state_dict(state_dict, strict=False, assign=assign)
