"""The sequence DataModule: a prepared dataset → leave-one-out split → length-grouped batches."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from sicsrec.compat import batches_done, distributed_sampler_requested
from sicsrec.data.batching import (
    EvalSample,
    LengthGroupedBatchSampler,
    SampleDataset,
    TrainingBatches,
    TrainTargets,
    as_batch,
    collate_eval,
    training_samples,
)
from sicsrec.data.formats import Reader
from sicsrec.data.prepare import PreparedData, prepare, without_items


class SequenceDataModule(L.LightningDataModule):
    """User sequences split leave-one-out: test = last item, validation = second to last.

    Args:
        root: dataset folder (relative to the working directory).
        reader: file layout; ``null`` detects it from the files in ``root``.
        max_len: most items a model input holds; longer histories are cut to the last ``max_len``.
        train_targets: ``all_positions`` (each training sequence once, loss at every position)
            or ``prefixes`` (RecBole's one-sample-per-prefix, for exact reproduction).
        window_stride: step between training windows of sequences longer than ``max_len``
            (default ``max_len // 2``).
        min_seq_len: users with fewer items are dropped (and counted); 3 is the least a
            train/validation/test split needs.
        drop_consecutive_duplicates: collapse repeated consecutive interactions (counted).
        shuffle_sequences: shuffle each user's items before splitting — a negative control
            that destroys order while keeping every user's item set.
        text_column: which title language content steps read (``en`` or ``zh``).
        batch_size: training targets per batch (with ``prefixes``, one target per sample: the same
            number RecBole's ``train_batch_size`` counts).
        eval_batch_size: users per evaluation batch.
        num_workers: DataLoader workers (batches are small integer tensors: 0 is usually fastest).
        cache_dir: cache folder; default ``$SICSREC_CACHE`` or ``~/.cache/sicsrec``.
        seed: seed of the batch order and of ``shuffle_sequences``; ``null`` uses the run's
            ``seed_everything``.
        generate_if_missing: if ``root`` does not exist, write a generated dataset there
            (2,000 users, 300 items, seed 0; see ``sicsrec data generate`` for other sizes).
        features: ``features.json`` written by ``sicsrec features`` (content models need it).
        modalities: which of its modalities to use (default: all it has).
        cold_items: the cold-start protocol: this share of the items that occur in training parts
            is deleted from every user's training part (never an input or target in training);
            validation and test rows keep them, and their metrics are also reported for the users
            whose target is such an item (``held_out/…``) and for the rest (``rest/…``). 0: off.
        cold_seed: seed of the held-out items (the same for every step and training seed).
    """

    def __init__(
        self,
        root: str,
        reader: Reader | None = None,
        max_len: int = 50,
        train_targets: TrainTargets = "all_positions",
        window_stride: int | None = None,
        min_seq_len: int = 3,
        drop_consecutive_duplicates: bool = False,
        shuffle_sequences: bool = False,
        text_column: str = "en",
        batch_size: int = 1024,
        eval_batch_size: int = 2048,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int | None = None,
        generate_if_missing: bool = False,
        features: str | None = None,
        modalities: list[str] | None = None,
        cold_items: float = 0.0,
        cold_seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["reader"])
        self.cold_items, self.cold_seed = cold_items, cold_seed
        self.features_manifest, self.modalities = features, modalities
        self.root, self.reader = Path(root), reader
        self.max_len, self.train_targets, self.window_stride = max_len, train_targets, window_stride
        self.min_seq_len, self.drop_consecutive_duplicates = min_seq_len, drop_consecutive_duplicates
        self.shuffle_sequences, self.text_column = shuffle_sequences, text_column
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.cache_dir, self.seed, self.generate_if_missing = cache_dir, seed, generate_if_missing

    @cached_property
    def data(self) -> PreparedData:
        if self.generate_if_missing and not self.root.exists():
            from sicsrec.data.generate import generate

            generate(self.root, users=2000, items=300, seed=0)
        data = prepare(self.root, self.reader, self.min_seq_len, self.drop_consecutive_duplicates, self.cache_dir)
        data.titles_in(self.text_column)
        return data

    def item_features(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Cached item features per modality (rows = internal item ids) and their presence masks."""
        import json

        from sicsrec.data.features import MODALITIES, load_features
        from sicsrec.errors import ConfigError, DataError

        if self.features_manifest is None:
            raise ConfigError(
                "this model reads item features: set data.features to a features.json written by `sicsrec features`"
            )
        path = Path(self.features_manifest)
        if not path.is_file():
            raise DataError(path, "features manifest not found", hint="run `sicsrec features` first")
        manifest = json.loads(path.read_text())
        if manifest.get("data_key") != self.data.key:
            raise ConfigError(
                f"{path} was computed for another dataset or preparation "
                f"({manifest.get('dataset')}, key {str(manifest.get('data_key'))[:12]}); rerun features"
            )
        names = self.modalities or [m for m in MODALITIES if m in manifest]
        values, masks = {}, {}
        for name in names:
            if name not in manifest:
                raise ConfigError(
                    f"{path} has no {name!r} features (it has: {[m for m in MODALITIES if m in manifest]})"
                )
            found = load_features(Path(manifest[name]["path"]))
            if found is None or found.meta.get("key") != manifest[name]["key"]:
                raise DataError(
                    manifest[name]["path"], "cached features missing or changed", hint="rerun `sicsrec features`"
                )
            values[name] = torch.from_numpy(np.array(found.values))
            masks[name] = torch.from_numpy(np.array(found.mask))
        return values, masks

    @property
    def resolved_seed(self) -> int:
        return self.seed if self.seed is not None else torch.initial_seed() % 2**32

    @property
    def num_items(self) -> int:
        return self.data.num_items

    @cached_property
    def sequences(self) -> list[np.ndarray]:
        seqs = [self.data.sequence(u) for u in range(self.data.num_users)]
        if self.shuffle_sequences:
            rng = np.random.default_rng(self.resolved_seed)
            seqs = [rng.permutation(s) for s in seqs]
        return seqs

    @cached_property
    def held_out_items(self) -> np.ndarray:
        """The cold-start protocol's items (``cold_items``; empty when it is off)."""
        return self.data.cold_start_items(self.cold_items, self.cold_seed)

    @cached_property
    def train_parts(self) -> list[np.ndarray]:
        return without_items([s[:-2] for s in self.sequences], self.held_out_items)

    def eval_samples(self, split: str) -> list[EvalSample]:
        """One sample per user: the target is the last item (test) or the one before (valid).

        ``predict`` uses the whole sequence as history (target 0: there is none).
        """
        if split == "predict":
            return self.history_samples(self.sequences)
        cut = 2 if split == "valid" else 1
        occurrences = self.train_item_counts().numpy()
        held = set(self.held_out_items.tolist())
        images = self.data.images if self.data.images and any(p is not None for p in self.data.images) else None
        out = []
        for user, s in enumerate(self.sequences):
            history, target = s[: len(s) - cut], int(s[len(s) - cut])
            held_out = int(target in held) if self.cold_items > 0 else -1
            no_cover = int(images[target - 1] is None) if images else -1
            inputs = history[-self.max_len :]
            out.append(EvalSample(user, inputs, target, history, int(occurrences[target]), held_out, no_cover))
        return out

    def split_histories(self, split: str) -> list[np.ndarray]:
        """Every user's history before the split's target (``predict``: the whole sequence): the
        histories a split ranks together — never a target of that split."""
        built = getattr(self, f"{split}_set", None)
        return [s.history for s in (built.samples if built is not None else self.eval_samples(split))]

    def history_samples(self, histories: list[np.ndarray]) -> list[EvalSample]:
        """Samples that ask for the next item after each whole history (internal ids): its last
        ``max_len`` items are the model input, all of them the seen items. ``predict`` and
        ``recommend`` both rank from these."""
        return [EvalSample(key, h[-self.max_len :], 0, h, 0) for key, h in enumerate(histories)]

    def history_loader(self, histories: list[np.ndarray]) -> DataLoader:
        """``predict``'s loader over any histories; each batch's ``user`` is the history's index."""
        return self._loader(SampleDataset(self.history_samples(histories)), self.eval_batch_size, False, collate_eval)

    def train_item_counts(self) -> torch.Tensor:
        """Interactions per item in the training parts (index 0 = padding): the popularity baseline."""
        counts = np.bincount(np.concatenate(self.train_parts), minlength=self.num_items + 1)
        counts[0] = 0
        return torch.from_numpy(counts)

    def train_transition_counts(self) -> torch.Tensor:
        """(num_items + 1)² counts of item a followed directly by item b in the training parts: the
        last-item (first-order Markov) baseline."""
        pairs = [(s[:-1], s[1:]) for s in self.train_parts if len(s) > 1]
        counts = torch.zeros(self.num_items + 1, self.num_items + 1)
        if pairs:
            a, b = (torch.from_numpy(np.concatenate(p)) for p in zip(*pairs))
            counts.index_put_((a, b), torch.ones(len(a)), accumulate=True)
        return counts

    def setup(self, stage: str | None = None) -> None:
        check_self_sharding(self)
        if stage in ("fit", None) and not hasattr(self, "train_set"):
            samples = training_samples(self.train_parts, self.max_len, self.train_targets, self.window_stride)
            self.train_set = TrainingBatches(samples)
        splits = ("predict",) if stage == "predict" else ("valid", "test")
        for split in splits:
            if not hasattr(self, f"{split}_set"):
                setattr(self, f"{split}_set", SampleDataset(self.eval_samples(split)))

    def _loader(self, dataset: SampleDataset | TrainingBatches, batch_size: int, shuffle: bool, collate) -> DataLoader:
        if collate is collate_eval:
            lengths, sizes = [len(s.input) for s in dataset.samples], None
        else:
            lengths, sizes = dataset.lengths, dataset.sizes
        sampler = LengthGroupedBatchSampler(lengths, batch_size, shuffle, self.resolved_seed, sizes)
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader(self.train_set, self.batch_size, True, as_batch)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            # The number of batches changes from epoch to epoch (length-grouped, reshuffled). Lightning
            # reads it when it builds the loader and validates when the batch index reaches it, so a
            # loader built once would skip validation in shorter epochs and validate early in longer
            # ones; built each epoch (the CLI's default), it counts this epoch's batches.
            loader.batch_sampler.set_epoch(trainer.current_epoch)
            if trainer.reload_dataloaders_every_n_epochs != 1:
                rank_zero_warn(
                    "SequenceDataModule: set trainer.reload_dataloaders_every_n_epochs=1 (the sicsrec CLI's "
                    "default): the number of training batches changes every epoch, and Lightning validates "
                    "at the end of an epoch only when it knows that epoch's number."
                )
        if self._resume is not None:
            loader.batch_sampler.resume_from(*self._resume)
            self._resume = None
        return loader

    _resume: tuple[int, int] | None = None

    def state_dict(self) -> dict:
        """Where training stands in the current epoch, so that a run resumed from a mid-epoch
        checkpoint continues with the next batch instead of restarting (or reshuffling) the epoch."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.state.fn != "fit":
            return {}
        done = batches_done(trainer)
        epoch = trainer.current_epoch
        if done >= trainer.num_training_batches:  # saved at the end of the epoch
            epoch, done = epoch + 1, 0
        return {"epoch": int(epoch), "batches_done": int(done)}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self._resume = (state["epoch"], state["batches_done"])

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_set, self.eval_batch_size, False, collate_eval)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, False, collate_eval)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, self.eval_batch_size, False, collate_eval)


def check_self_sharding(datamodule: L.LightningDataModule) -> None:
    """Our DataModules shard batches across ranks themselves (length-grouped batches cannot be
    re-cut by a DistributedSampler); Lightning must not inject one. ``sicsrec`` sets this by default."""
    trainer = getattr(datamodule, "trainer", None)
    if trainer is None or trainer.world_size == 1:
        return
    if distributed_sampler_requested(trainer):
        from sicsrec.errors import ConfigError

        raise ConfigError(
            "multi-device training needs trainer.use_distributed_sampler: false "
            "(sicsrec's batch samplers shard batches across ranks themselves)"
        )


class AlignDataModule(L.LightningDataModule):
    """Judged pairs (``pairs.jsonl``) with the items' titles and covers, for alignment SFT.

    A fraction of *items* is held out: training pairs never touch them; validation asks
    text-to-text retrieval for held-out targets and text-to-image retrieval among held-out
    items, so the validation recall measures generalisation to unseen items.

    Args:
        root: dataset folder.
        pairs: ``pairs.jsonl`` written by ``sicsrec pairs``.
        reader: file layout, as in ``SequenceDataModule`` (``null``: detected from the files).
        text_column: title language (``en`` or ``zh``).
        use_images: load covers when the dataset has them.
        batch_size: pairs per batch.
        holdout_items: fraction of items held out for validation.
        min_seq_len: as in data preparation.
        cache_dir: cache folder.
        seed: seed of the held-out split and the batch order; ``null`` uses ``seed_everything``.
        num_workers: DataLoader workers (covers are read in them).
        cold_items, cold_seed: the cold-start protocol's held-out items (as in
            ``SequenceDataModule``): no training pair touches them.
    """

    def __init__(
        self,
        root: str,
        pairs: str,
        text_column: str = "en",
        use_images: bool = True,
        batch_size: int = 128,
        holdout_items: float = 0.1,
        min_seq_len: int = 3,
        cache_dir: str | None = None,
        seed: int | None = None,
        num_workers: int = 0,
        cold_items: float = 0.0,
        cold_seed: int = 0,
        reader: Reader | None = None,
    ):
        super().__init__()
        self.cold_items, self.cold_seed, self.reader = cold_items, cold_seed, reader
        self.root, self.pairs_path, self.text_column, self.use_images = Path(root), Path(pairs), text_column, use_images
        self.batch_size, self.holdout_items, self.min_seq_len = batch_size, holdout_items, min_seq_len
        self.cache_dir, self.seed, self.num_workers = cache_dir, seed, num_workers

    @cached_property
    def data(self) -> PreparedData:
        return prepare(self.root, self.reader, self.min_seq_len, False, self.cache_dir)

    @cached_property
    def pairs(self) -> np.ndarray:
        """(n, 2) internal ids (target, chosen)."""
        import json

        from sicsrec.errors import DataError

        if not self.pairs_path.is_file():
            raise DataError(self.pairs_path, "pairs file not found", hint="run `sicsrec pairs` first")
        index = {item: i + 1 for i, item in enumerate(self.data.item_ids)}
        rows = []
        for line, raw in enumerate(self.pairs_path.read_text(encoding="utf-8").splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
                rows.append((index[str(row["target"])], index[str(row["chosen"])]))
            except json.JSONDecodeError:
                raise DataError(self.pairs_path, "not a JSON object", line) from None
            except KeyError as err:
                raise DataError(
                    self.pairs_path,
                    f"unknown item or missing field {err}",
                    line,
                    "pairs were made for another dataset?",
                ) from None
        if not rows:
            raise DataError(self.pairs_path, "no pairs")
        return np.array(rows, dtype=np.int64)

    @property
    def has_images(self) -> bool:
        return self.use_images and bool(self.data.images)

    def setup(self, stage: str | None = None) -> None:
        check_self_sharding(self)
        seed = self.seed if self.seed is not None else torch.initial_seed() % 2**32
        rng = np.random.default_rng(seed)
        held = np.zeros(self.data.num_items + 1, dtype=bool)
        held[1 + rng.permutation(self.data.num_items)[: int(round(self.holdout_items * self.data.num_items))]] = True
        cold = np.zeros_like(held)
        cold[self.data.cold_start_items(self.cold_items, self.cold_seed)] = True
        touches = held[self.pairs[:, 0]] | held[self.pairs[:, 1]]
        never = cold[self.pairs[:, 0]] | cold[self.pairs[:, 1]]  # the cold-start protocol's items
        self.train_pairs = self.pairs[~touches & ~never]
        self.valid_pairs = self.pairs[held[self.pairs[:, 0]] & ~never]
        self.held_items = np.flatnonzero(held & ~cold)
        self.train_items = np.flatnonzero(~held & ~cold)[1:]  # without padding
        self.batch_seed = seed

    def _title(self, item: int) -> str:
        return self.data.titles_in(self.text_column)[item - 1]

    def _cover(self, item: int):
        from sicsrec.data.formats import load_cover

        return load_cover(self.data.images[item - 1]) if self.has_images else None

    def collate_pairs(self, rows) -> dict:
        rows = np.asarray(rows)
        target, chosen = torch.from_numpy(rows[:, 0]), torch.from_numpy(rows[:, 1])
        batch = {
            "target": target,
            "chosen": chosen,
            "target_titles": [self._title(i) for i in rows[:, 0]],
            "chosen_titles": [self._title(i) for i in rows[:, 1]],
        }
        if self.has_images:
            covers = {int(i): self._cover(int(i)) for i in np.unique(rows)}
            batch["target_images"] = [covers[int(i)] for i in rows[:, 0]]
            batch["chosen_images"] = [covers[int(i)] for i in rows[:, 1]]
            batch["pair_has_images"] = torch.tensor(
                [covers[int(a)] is not None and covers[int(b)] is not None for a, b in rows]
            )
            # text-to-image also learns from items outside the pairs: fill up with random training items
            extra = self.train_items[torch.randint(len(self.train_items), (self.batch_size,)).numpy()]
            for i in np.unique(extra):
                if int(i) not in covers and len(covers) < 2 * self.batch_size:
                    covers[int(i)] = self._cover(int(i))
            items = [i for i, c in covers.items() if c is not None]
            batch.update(self._items(items, covers))
        else:
            batch.update(items=torch.zeros(0, dtype=torch.long), item_titles=[], item_images=[])
        return batch

    def _items(self, items, covers) -> dict:
        return {
            "items": torch.tensor(items, dtype=torch.long),
            "item_titles": [self._title(i) for i in items],
            "item_images": [covers[i] for i in items],
        }

    def collate_validation(self, _) -> dict:
        rows = self.valid_pairs
        batch = {
            "target": torch.from_numpy(rows[:, 0]),
            "chosen": torch.from_numpy(rows[:, 1]),
            "all_titles": list(self.data.titles_in(self.text_column)),
        }
        if self.has_images:
            covers = {int(i): self._cover(int(i)) for i in self.held_items}
            batch.update(self._items([i for i, c in covers.items() if c is not None], covers))
        else:
            batch.update(items=torch.zeros(0, dtype=torch.long), item_titles=[], item_images=[])
        return batch

    def train_dataloader(self) -> DataLoader:
        import torch.distributed as dist
        from torch.utils.data import DistributedSampler

        pairs = list(map(tuple, self.train_pairs))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler = DistributedSampler(pairs, shuffle=True, seed=self.batch_seed)  # Lightning sets its epoch
            per_rank = len(sampler)
            return DataLoader(
                pairs,
                batch_size=self.batch_size,
                sampler=sampler,
                drop_last=per_rank > self.batch_size,
                collate_fn=self.collate_pairs,
                num_workers=self.num_workers,
            )
        generator = torch.Generator().manual_seed(self.batch_seed)
        return DataLoader(
            pairs,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(pairs) > self.batch_size,
            collate_fn=self.collate_pairs,
            num_workers=self.num_workers,
            generator=generator,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader([0], batch_size=1, collate_fn=self.collate_validation)
