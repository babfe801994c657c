"""Learning is tested by learning: the ID encoder must find the planted order signal, and must
not find one when every user's sequence is shuffled (negative control)."""

import lightning as L
import pytest

from sicsrec.data import SequenceDataModule
from sicsrec.data.generate import generate
from sicsrec.evaluation import evaluate, popularity_scorer
from sicsrec.modules import Stage1Module


@pytest.fixture(scope="module")
def ordered_data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("learn") / "Gen", users=2000, items=300, seed=1, covers="none")


def train_and_compare(root, shuffle: bool) -> tuple[float, float]:
    L.seed_everything(0, verbose=False)
    dm = SequenceDataModule(str(root), batch_size=256, max_len=20, shuffle_sequences=shuffle)
    dm.setup("fit")
    model = Stage1Module(dm.num_items, max_len=20, hidden_size=64, inner_size=64, dropout=0.2, attn_dropout=0.2)
    trainer = L.Trainer(max_epochs=20, reload_dataloaders_every_n_epochs=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, dm)
    model.eval()
    ours = evaluate(model.score, dm.test_dataloader())["ndcg@10"]
    popular = evaluate(popularity_scorer(dm.train_item_counts()), dm.test_dataloader())["ndcg@10"]
    return ours, popular


def test_id_encoder_beats_popularity_twice_on_ordered_data(ordered_data):
    ours, popular = train_and_compare(ordered_data, shuffle=False)
    assert ours >= 2.0 * popular, (ours, popular)


def test_id_encoder_does_not_when_sequences_are_shuffled(ordered_data):
    ours, popular = train_and_compare(ordered_data, shuffle=True)
    assert ours < 2.0 * popular, (ours, popular)
    assert ours > 0.5 * popular  # it still learns popularity: the control is not a broken model
