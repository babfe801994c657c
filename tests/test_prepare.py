"""Prepared data, the leave-one-out split, training samples and length-grouped batches."""

from collections import Counter

import numpy as np
import torch

from sicsrec.data import SequenceDataModule, prepare
from sicsrec.data.batching import LengthGroupedBatchSampler, collate_train, training_samples
from sicsrec.data.formats import SequenceFormat
from tests.conftest import ninerec


def test_ids_are_remapped_with_zero_as_padding_and_map_back():
    root = ninerec("Bili_Food")
    raw = SequenceFormat().read(root)
    data = prepare(root)
    assert data.items.min() == 1 and data.items.max() == data.num_items == 1579
    for u in (0, 17, data.num_users - 1):
        assert [data.item_ids[i - 1] for i in data.sequence(u)] == raw.sequences[u]
        assert data.user_ids[u] == raw.user_ids[u]


def test_cache_is_reused_until_the_source_changes(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "X_item.csv").write_text("0,a,A\n1,b,B\n2,c,C\n")
    (root / "sequential_data.txt").write_text("0 0 1 2\n1 2 1 0\n")
    cache = tmp_path / "cache"
    first = prepare(root, cache_dir=cache)
    files = list((cache / "prepared").glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    assert prepare(root, cache_dir=cache).key == first.key
    assert files[0].stat().st_mtime_ns == mtime  # loaded, not rewritten
    (root / "sequential_data.txt").write_text("0 0 1 2\n1 2 1 0 1\n")
    second = prepare(root, cache_dir=cache)
    assert second.key != first.key and second.stats["interactions"] == 7


def test_leave_one_out_split():
    dm = SequenceDataModule(str(ninerec("Bili_Food")), max_len=3)
    dm.setup("fit")
    seq = dm.sequences[0]
    user, inp, target, history, *_ = dm.valid_set[0]
    assert user == 0 and target == seq[-2] and list(history) == list(seq[:-2]) and list(inp) == list(seq[:-2][-3:])
    test = dm.test_set[0]
    assert test.held_out == -1 and test.no_cover == -1  # the cold-start protocol is off; the set has no covers
    assert test.target == seq[-1] and list(test.history) == list(seq[:-1]) and list(test.input) == list(seq[:-1][-3:])
    # its occurrences are counted in all training parts
    assert test.occurrences == sum(int((s[:-2] == test.target).sum()) for s in dm.sequences)
    # every training target comes from training parts only
    n_targets = sum(int((s[1] > 0).sum()) for s in dm.train_set.samples)
    assert n_targets == sum(max(0, len(s) - 3) for s in dm.sequences)


def recbole_prefixes(seq, max_len):
    return [(tuple(seq[max(0, i - max_len) : i]), seq[i]) for i in range(1, len(seq))]


def test_all_positions_trains_every_target_once_on_a_suffix_of_its_own_prefix():
    rng = np.random.default_rng(0)
    # distinct items within a sequence, so a target names its position
    parts = [rng.permutation(np.arange(1, 100))[:n] for n in (1, 2, 5, 12, 31, 64)]
    max_len, stride = 8, 3
    for seq in parts:
        position = {int(item): i for i, item in enumerate(seq)}
        trained = Counter()
        for x, y in training_samples([seq], max_len, "all_positions", stride=stride):
            assert len(x) == len(y) <= max_len
            for pos in np.flatnonzero(y):
                i = position[int(y[pos])]
                context = tuple(int(v) for v in x[: pos + 1])
                # what the model sees for target seq[i]: the items just before it, never the target itself
                assert context == tuple(int(v) for v in seq[i - pos - 1 : i]), (list(seq), list(x), list(y))
                assert len(context) >= min(i, max_len - stride + 1)  # a later window keeps max_len - stride of context
                trained[i] += 1
        assert trained == Counter(range(1, len(seq))), list(seq)  # every target exactly once


def test_prefixes_reproduce_recbole_samples_exactly():
    rng = np.random.default_rng(1)
    parts = [rng.integers(1, 50, size=n) for n in (2, 7, 20)]
    samples = training_samples(parts, 5, "prefixes")
    got = sorted((tuple(x), int(y[-1])) for x, y in samples)
    expected = sorted((c, int(t)) for s in parts for c, t in recbole_prefixes(list(s), 5))
    assert got == expected
    assert all((y[:-1] == 0).all() for _, y in samples)


def test_length_grouped_batches_cover_everything_reshuffle_and_pad_little():
    rng = np.random.default_rng(2)
    lengths = rng.geometric(0.15, size=5000).clip(1, 50)
    sampler = LengthGroupedBatchSampler(lengths, 256, shuffle=True, seed=0)
    epoch0 = list(sampler)
    assert sorted(i for b in epoch0 for i in b) == list(range(5000))
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1
    padded = sum(len(b) * lengths[b].max() for b in map(np.array, epoch0))
    assert padded < 1.2 * lengths.sum() < 0.5 * 50 * len(lengths)


def test_collate_pads_to_the_longest_in_batch():
    batch = collate_train([(np.array([1, 2]), np.array([2, 3])), (np.array([4]), np.array([5]))])
    assert batch["input"].tolist() == [[1, 2], [4, 0]]
    assert batch["target"].tolist() == [[2, 3], [5, 0]]


def test_batch_size_counts_training_targets():
    rng = np.random.default_rng(3)
    parts = [rng.integers(1, 50, size=n) for n in rng.integers(2, 30, size=400)]
    samples = training_samples(parts, 20)
    sizes = [int((y > 0).sum()) for _, y in samples]
    sampler = LengthGroupedBatchSampler([len(x) for x, _ in samples], 128, True, sizes=sizes)
    batches = list(sampler)
    totals = [sum(sizes[i] for i in b) for b in batches]
    assert max(totals) <= 128
    assert sum(totals) == sum(sizes)
    assert np.mean(totals) > 100  # batches are filled, not cut short


def test_a_lightning_fit_reshuffles_batches_every_epoch(generated):
    """Lightning must reach the batch sampler's ``set_epoch`` (it looks for ``batch_sampler.sampler``)."""
    import lightning as L

    from sicsrec.modules import Stage1Module

    class FirstBatches(L.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0:
                self.seen.append(batch["input"].clone())

    record = FirstBatches()
    trainer = L.Trainer(
        max_epochs=3,
        reload_dataloaders_every_n_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[record],
    )
    trainer.fit(
        Stage1Module(hidden_size=8, inner_size=8, num_layers=1, use_content=False),
        SequenceDataModule(str(generated), max_len=10, batch_size=256, seed=0),
    )
    first = record.seen
    assert len(first) == 3
    assert not any(a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, first[1:]))


def test_pre_padded_training_batches_equal_collating_the_samples():
    from sicsrec.data.batching import TrainingBatches

    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 50, size=n) for n in rng.integers(3, 30, size=200)]
    samples = training_samples(seqs, 10)
    dataset = TrainingBatches(samples)
    sampler = LengthGroupedBatchSampler([len(x) for x, _ in samples], 64, shuffle=True, seed=1)
    for indices in sampler:
        fast = dataset.__getitems__(indices)
        slow = collate_train([samples[i] for i in indices])
        assert torch.equal(fast["input"], slow["input"]) and torch.equal(fast["target"], slow["target"])
