"""Turning prepared sequences into training and evaluation samples, and samples into batches.

Training puts the loss at every position of each training sequence (``all_positions``):
the same targets as RecBole's prefix duplication, fed once. ``prefixes`` reproduces RecBole
exactly (one sample per prefix, loss at its last position). Target 0 means "no loss here".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

TrainTargets = Literal["all_positions", "prefixes"]


class EvalSample(NamedTuple):
    """One user's evaluation row; the last three say which reported groups the target falls in."""

    user: int  # the user's index (``predict``/``recommend``: the history's index)
    input: np.ndarray  # the last ``max_len`` items before the target: the model input
    target: int  # 0: none (``predict``)
    history: np.ndarray  # every item before the target: what the masked protocol removes
    occurrences: int  # the target's occurrences in all users' training parts (cold / rare / warm)
    held_out: int = -1  # a held-out item of the cold-start protocol: 1 or 0; -1 when it is off
    no_cover: int = -1  # the target has no cover: 1 or 0; -1 when the catalogue has no covers


def training_samples(
    train_parts: Sequence[np.ndarray], max_len: int, mode: TrainTargets = "all_positions", stride: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input, target) pairs. Sequences longer than ``max_len`` become overlapping windows.

    Each later window sees ``max_len`` items of context but only carries the loss for the
    targets the previous windows did not cover, so every target is trained exactly once.
    """
    stride = stride or max(1, max_len // 2)
    samples = []
    for seq in train_parts:
        if len(seq) < 2:
            continue
        if mode == "prefixes":
            for i in range(1, len(seq)):
                x = seq[max(0, i - max_len) : i]
                y = np.zeros_like(x)
                y[-1] = seq[i]
                samples.append((x, y))
            continue
        x, y = seq[:-1], seq[1:]
        end, covered = min(max_len, len(x)), 0
        while True:
            start = end - min(max_len, end)
            target = y[start:end].copy()
            target[: max(0, covered - start)] = 0
            samples.append((x[start:end], target))
            covered = end
            if end == len(x):
                break
            end = min(end + stride, len(x))
    return samples


class SampleDataset(Dataset):
    def __init__(self, samples: list):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        return self.samples[i]


def pad(arrays: Sequence[np.ndarray], length: int | None = None) -> torch.Tensor:
    """Right-pad with 0 to the longest array (or ``length``)."""
    length = length or max(1, max(len(a) for a in arrays))
    out = np.zeros((len(arrays), length), dtype=np.int64)
    for row, a in enumerate(arrays):
        out[row, : len(a)] = a
    return torch.from_numpy(out)


def collate_train(samples) -> dict[str, torch.Tensor]:
    return {"input": pad([s[0] for s in samples]), "target": pad([s[1] for s in samples])}


class TrainingBatches(SampleDataset):
    """Training samples padded once into two integer arrays: a batch is one fancy-index and a
    slice to its longest sample (``__getitems__``, which the DataLoader calls with a whole
    batch's indices), not a Python loop over samples. Gives what ``collate_train`` gives."""

    def __init__(self, samples: list[tuple[np.ndarray, np.ndarray]]):
        super().__init__(samples)
        self.lengths = np.array([len(x) for x, _ in samples], dtype=np.int64)
        width = int(self.lengths.max(initial=1))
        self.inputs = np.zeros((len(samples), width), dtype=np.int64)
        self.targets = np.zeros((len(samples), width), dtype=np.int64)
        for row, (x, y) in enumerate(samples):
            self.inputs[row, : len(x)] = x
            self.targets[row, : len(y)] = y
        self.sizes = (self.targets > 0).sum(axis=1)  # training targets per sample: what a batch counts

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices)
        width = max(1, int(self.lengths[rows].max()))
        return {
            "input": torch.from_numpy(self.inputs[rows, :width]),
            "target": torch.from_numpy(self.targets[rows, :width]),
        }


def as_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The collate function for ``TrainingBatches``: the batch is already made."""
    return batch


def collate_eval(samples: list[EvalSample]) -> dict[str, torch.Tensor]:
    """``EvalSample``s → a batch of their fields (``input`` and ``history`` padded)."""
    return {
        name: pad([getattr(s, name) for s in samples])
        if name in ("input", "history")
        else torch.tensor([getattr(s, name) for s in samples], dtype=torch.long)
        for name in EvalSample._fields
    }


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar-length samples, so short sequences are not padded to ``max_len``.

    A batch holds samples whose ``sizes`` add up to at most ``batch_size`` (one per sample by
    default; the number of training targets for ``all_positions``, so that ``batch_size: 1024``
    means 1,024 targets per step, as RecBole's 1,024 prefixes do). With ``shuffle``, samples are
    shuffled each epoch (``set_epoch``, which Lightning calls), sorted by length inside
    mega-batches of ``50 × batch_size`` and the batches shuffled: batches
    differ every epoch yet stay tight. Under ``torch.distributed`` each rank takes every
    ``world_size``-th batch, the list padded by repeating its first batches so ranks stay in
    step (the evaluation metric counts each user once, so repeats do not count).

    ``resume_from(epoch, batches_done)`` makes the first pass over ``epoch`` skip the batches a
    killed run had already trained on (the DataModule calls it when a checkpoint is restored).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        sizes: Sequence[int] | None = None,
        mega_batch: int = 50,
    ):
        self.lengths = np.asarray(lengths)
        self.sizes = np.ones(len(self.lengths), dtype=np.int64) if sizes is None else np.asarray(sizes)
        self.batch_size, self.shuffle, self.seed, self.mega_batch = batch_size, shuffle, seed, mega_batch
        self.epoch, self._skip = 0, None

    def resume_from(self, epoch: int, batches_done: int) -> None:
        self.epoch, self._skip = epoch, (epoch, batches_done)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> LengthGroupedBatchSampler:
        """Lightning calls ``set_epoch`` on ``batch_sampler.sampler`` (PyTorch's ``BatchSampler``
        layout), not on the batch sampler itself: without this, every epoch had epoch 0's order."""
        return self

    def _split(self, order: np.ndarray) -> list[np.ndarray]:
        """Cut ``order`` into consecutive batches of at most ``batch_size`` total size."""
        batches, start, total = [], 0, 0
        for k, size in enumerate(self.sizes[order]):
            if total + size > self.batch_size and k > start:
                batches.append(order[start:k])
                start, total = k, 0
            total += size
        if start < len(order):
            batches.append(order[start:])
        return batches

    def _all_batches(self) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            return self._split(np.argsort(self.lengths, kind="stable"))
        rng = np.random.default_rng((self.seed, self.epoch))
        perm = rng.permutation(n)
        chunk = max(1, int(self.batch_size * self.mega_batch / max(1.0, self.sizes.mean())))
        batches = []
        for i in range(0, n, chunk):
            part = perm[i : i + chunk]
            batches += self._split(part[np.argsort(self.lengths[part], kind="stable")])
        return [batches[k] for k in rng.permutation(len(batches))]

    def _rank_batches(self) -> list[np.ndarray]:
        if dist.is_available() and dist.is_initialized():
            return self.shard(self._all_batches(), dist.get_world_size(), dist.get_rank())
        return self._all_batches()

    @staticmethod
    def shard(batches: list[np.ndarray], world: int, rank: int) -> list[np.ndarray]:
        """This rank's batches: every ``world``-th, the list padded so every rank has as many."""
        if world == 1:
            return batches
        if len(batches) % world:
            batches = batches + (batches * world)[: world - len(batches) % world]
        return batches[rank::world]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        if self._skip is not None:
            epoch, done = self._skip
            self._skip = None
            if epoch == self.epoch:
                batches = batches[done:]
        for b in batches:
            yield b.tolist()

    def __len__(self) -> int:
        return len(self._rank_batches())
