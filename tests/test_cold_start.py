"""The cold-start protocol (``cold_items``): held-out items never reach training, evaluation keeps them."""

import json

import numpy as np
import pytest
import torch

from sicsrec.content.pairs import build_requests
from sicsrec.data.datamodule import AlignDataModule, SequenceDataModule
from sicsrec.errors import ConfigError
from sicsrec.evaluation import evaluate, popularity_scorer
from sicsrec.nn.losses import item_scores


def module(root, share=0.2, seed=3, **kw) -> SequenceDataModule:
    dm = SequenceDataModule(str(root), max_len=8, batch_size=256, seed=0, cold_items=share, cold_seed=seed, **kw)
    dm.setup("fit")
    return dm


def test_held_out_items_never_reach_training_and_stay_in_evaluation(generated):
    dm = module(generated)
    held = set(dm.held_out_items.tolist())
    occurring = {int(i) for s in dm.sequences for i in s[:-2]}
    assert held <= occurring and len(held) == round(0.2 * len(occurring))  # the share, among training items
    assert set(module(generated).held_out_items.tolist()) == held  # the seed is honoured…
    assert set(module(generated, seed=4).held_out_items.tolist()) != held  # …and it matters

    seen_inputs = seen_targets = 0
    for batch in dm.train_dataloader():  # every training sequence, every window
        inputs, targets = batch["input"].numpy(), batch["target"].numpy()
        assert not np.isin(inputs, list(held)).any() and not np.isin(targets, list(held)).any()
        seen_inputs, seen_targets = seen_inputs + int((inputs > 0).sum()), seen_targets + int((targets > 0).sum())
    kept = sum(int(np.isin(s[:-2], list(held), invert=True).sum()) for s in dm.sequences)
    assert seen_targets == kept - sum(1 for p in dm.train_parts if len(p)) and seen_inputs >= seen_targets
    assert int(dm.train_item_counts()[list(held)].sum()) == 0

    for cut, split in ((2, "valid"), (1, "test")):
        samples = dm.eval_samples(split)
        assert len(samples) == len(dm.sequences)  # users whose training part emptied keep their rows
        for sample, s in zip(samples, dm.sequences):
            assert np.array_equal(sample.history, s[: len(s) - cut])  # inputs keep held-out items
            assert sample.held_out == int(sample.target in held)
    assert any(s[-1] in held for s in dm.sequences)  # the test below has users in both groups


def test_users_whose_training_part_empties_still_get_evaluated(generated):
    dm = module(generated, share=0.9)
    emptied = [u for u, p in enumerate(dm.train_parts) if len(p) == 0]
    assert emptied and len(dm.eval_samples("test")) == len(dm.sequences)


def test_held_out_and_rest_add_up_to_all_users(generated):
    dm = module(generated)
    dm.setup("test")
    metrics = evaluate(popularity_scorer(dm.train_item_counts()), dm.test_dataloader())
    held = set(dm.held_out_items.tolist())
    assert metrics["held_out/users"] == sum(int(s[-1]) in held for s in dm.sequences) > 0
    assert metrics["held_out/users"] + metrics["rest/users"] == metrics["users"] == len(dm.sequences)
    # popularity never ranks an item training never saw into the top 10 of 120
    assert metrics["held_out/hr@10"] == 0.0 and metrics["rest/hr@10"] > 0.0
    off = module(generated, share=0.0)
    off.setup("test")
    assert not any(
        k.startswith(("held_out/", "rest/"))
        for k in evaluate(popularity_scorer(off.train_item_counts()), off.test_dataloader())
    )


def test_no_pair_or_alignment_batch_holds_a_held_out_item(generated, tmp_path):
    dm = module(generated)
    held = dm.held_out_items
    requests, _ = build_requests(dm.data, "en", 20, held)
    asked = {r.target for r in requests} | {c for r in requests for c in r.candidates}
    assert asked and not asked & set(held.tolist())
    unprotected, _ = build_requests(dm.data, "en", 20)
    assert {r.target for r in unprotected} & set(held.tolist())  # without the protocol they would be there

    # a pairs file with pairs on held-out items (as one made without the protocol has)
    ids = dm.data.item_ids
    rows = [{"target": ids[a - 1], "chosen": ids[b - 1]} for a, b in zip(range(1, 100), range(2, 101))]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    align = AlignDataModule(str(generated), str(path), batch_size=16, seed=0, cold_items=0.2, cold_seed=3)
    align.setup("fit")
    assert len(align.train_pairs) and not np.isin(align.train_pairs, held).any()
    for batch in align.train_dataloader():
        assert not np.isin(batch["target"].numpy(), held).any() and not np.isin(batch["chosen"].numpy(), held).any()
    assert not np.isin(align.train_items, held).any()


def test_a_share_outside_zero_to_one_is_refused(generated):
    with pytest.raises(ConfigError, match="cold_items is 1.0"):
        module(generated, share=1.0)  # setup reads the training parts


def stage2(dm, encoders=None, **kw):
    from sicsrec.modules import Stage2Module

    tiny = {"hidden_size": 16, "inner_size": 16, "num_layers": 1, "num_heads": 1, **(encoders or {})}
    model = Stage2Module(None, encoders=tiny, decoder_heads=1, **kw)
    model.bind_features(dm)
    model.bind_data(dm.num_items, dm.max_len)
    return model


def test_item_content_scores_a_never_seen_item_through_its_content_only(generated, features):
    dm = module(generated, features=str(features))
    torch.manual_seed(0)
    model = stage2(dm, encoders={"item_content": True}, cold_neighbours=0, skip_new_items=False).eval()
    content_map = model.network.id_encoder.content_map
    held, seen = int(dm.held_out_items[0]), int(np.flatnonzero(dm.train_item_counts().numpy())[0])
    before = model.item_vectors().detach()
    with torch.no_grad():
        model.network.id_encoder.item_embedding.weight[[held, seen]] += 1.0
    after = model.item_vectors().detach()
    assert torch.equal(after[held], before[held])  # its ID row plays no part…
    assert not torch.allclose(after[seen], before[seen])  # …a seen item's does
    with torch.no_grad():  # its content does: give it another item's features
        model.features_text[held] = model.features_text[seen]
        model.on_predict_epoch_start()
    swapped = model.item_vectors().detach()
    assert torch.allclose(swapped[held], content_map(*model.feature_inputs())[held])
    assert not torch.allclose(swapped[held], after[held])


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("cold_neighbours", [0, 5])
def test_unseen_items_are_never_negatives_of_training(generated, features, cold_neighbours):
    """…whether their rows are their own or borrowed from seen items (``cold_neighbours``); the
    seen items are (the test can fail)."""
    dm = module(generated, features=str(features))
    torch.manual_seed(0)
    model = stage2(dm, cold_neighbours=cold_neighbours).train()
    batch = next(iter(dm.train_dataloader()))
    model.training_step(batch, 0).backward()
    grad = model.network.id_encoder.item_embedding.weight.grad
    held = torch.from_numpy(dm.held_out_items)
    pushed = grad[held].abs().sum(1) > 0  # a negative's row is pushed away from the user vectors
    assert not bool(pushed.any())
    seen = torch.from_numpy(np.flatnonzero(dm.train_item_counts().numpy()))
    assert bool((grad[seen].abs().sum(1) > 0).float().mean() > 0.9)


def test_a_never_seen_item_borrows_the_content_weighted_rows_of_its_nearest_seen_items(generated, features):
    dm = module(generated, features=str(features))
    torch.manual_seed(0)
    model = stage2(dm, cold_neighbours=3).eval()
    seen = model.seen_items
    with torch.no_grad():
        content = model.content_table(model.network.content_encoder)
        rows = model.network.id_encoder.item_embedding.weight
        table = model.item_vectors()
    assert torch.equal(table[seen], rows[seen])  # seen items keep their own rows
    unit = torch.nn.functional.normalize(content, dim=-1)
    for new in dm.held_out_items[:5].tolist():
        cosines = unit[new] @ unit.T
        cosines[~seen] = -2.0  # never from another never-seen item (or padding)
        top = cosines.topk(3)
        weights = torch.softmax(top.values / model.hparams.content_temperature, 0)
        assert torch.allclose(table[new], (weights[:, None] * rows[top.indices]).sum(0), atol=1e-6)


@pytest.mark.parametrize("skip_new_items", [True, False])
def test_a_never_seen_item_in_a_history_is_skipped_by_the_encoders(generated, features, skip_new_items):
    """With ``skip_new_items`` an evaluation input that holds held-out items gives the user vector of
    the same input without them, so their never-fitted rows play no part (a history of held-out
    items only is read as it is); without, those rows are read."""
    from sicsrec.data.batching import pad

    dm = module(generated, features=str(features))
    dm.setup("test")
    torch.manual_seed(0)
    model = stage2(dm, skip_new_items=skip_new_items).eval()
    held = torch.from_numpy(dm.held_out_items)
    batch = next(iter(dm.test_dataloader()))
    items = batch["input"][torch.isin(batch["input"], held).any(1)]
    assert len(items) > 0, "generated data: some test input should hold a held-out item"
    only_held = pad([held[:3].numpy()])  # nothing seen: read as it is
    held_ids = set(held.tolist())
    without = pad([[i for i in row.tolist() if i > 0 and i not in held_ids] for row in items])
    with torch.no_grad():
        users = model.user_vectors({"input": items})
        users_without = model.user_vectors({"input": without})
        alone = model.user_vectors({"input": only_held})
        rows = model.network.id_encoder.item_embedding.weight
        rows[held] += torch.randn(len(held), rows.shape[1], generator=torch.Generator().manual_seed(1))
        moved, alone_moved = model.user_vectors({"input": items}), model.user_vectors({"input": only_held})
    assert not torch.allclose(alone, alone_moved, atol=1e-4)
    if skip_new_items:
        assert torch.allclose(users, users_without, atol=1e-5) and torch.allclose(moved, users, atol=1e-5)
    else:
        assert not torch.allclose(users, users_without, atol=1e-4) and not torch.allclose(moved, users, atol=1e-4)


def test_the_new_item_chain_scores_a_never_seen_item_from_the_transitions_into_it():
    """Item 9, which training never saw, follows item 3 in 8 of the 10 histories that hold 3: after
    3 the mixture gives it exactly the chain's p(9 | 3) and ranks it first; after 4, which never
    led to it, it gets only its popularity share. Every other item keeps the model's score (item 10,
    never seen and in no history, too)."""
    from sicsrec.nn.new_items import NewItemChain

    seen = torch.ones(11, dtype=torch.bool)
    seen[[9, 10]] = False
    rng = np.random.default_rng(0)
    histories = [np.array([1, 3, 9])] * 8 + [np.array([1, 3, 5])] * 2
    histories += [rng.choice([1, 2, 4, 5, 6, 7, 8], 6) for _ in range(30)]
    chain = NewItemChain(histories, seen)
    assert chain.items.tolist() == [9]
    scores = torch.randn(2, 11, generator=torch.Generator().manual_seed(0))
    scores[:, 0] = float("-inf")
    out = chain(scores, torch.tensor([3, 4]))
    others = [i for i in range(11) if i != 9]
    assert torch.equal(out[:, others], scores[:, others])
    m, into_9 = chain.weight, 8 / sum(len(h) - 1 for h in histories)
    p_after_3, p_after_4 = (8 + m * into_9) / (10 + m), (m * into_9) / (int(chain.out[4]) + m)
    probabilities = torch.softmax(out, dim=1)[:, 9]
    assert probabilities.tolist() == pytest.approx([p_after_3, p_after_4], rel=1e-5)
    assert int(out[0].argmax()) == 9 and p_after_4 < p_after_3 / 10
    # a benchmark's calibration: the chain's probabilities times 2 and 4, their sum capped at 0.95
    for scale in (2.0, 4.0):
        scaled = torch.softmax(chain(scores, torch.tensor([3, 4]), scale=scale), dim=1)[:, 9]
        assert scaled.tolist() == pytest.approx([min(0.95, scale * p_after_3), scale * p_after_4], rel=1e-5)
    assert 4 * p_after_3 > 0.95  # the cap was reached


def test_the_chain_s_prior_weight_trusts_a_row_s_own_counts_as_far_as_they_predict():
    """Leave-one-out: histories that always take the same path give the smallest prior weight;
    items drawn at random give a large one (popularity is all there is to know)."""
    from sicsrec.nn.new_items import PRIOR_WEIGHTS, NewItemChain

    seen = torch.zeros(21, dtype=torch.bool)
    path = [np.arange(1, 21)] * 50
    noise = [np.random.default_rng(k).integers(1, 21, 20) for k in range(50)]
    assert NewItemChain(path, seen).weight == PRIOR_WEIGHTS[0]
    assert NewItemChain(noise, seen).weight >= 1000


def test_fold_in_fits_a_new_item_s_row_to_the_users_who_just_moved_to_it():
    """Two kinds of users, of opposite tastes; 40 of kind A (none of kind B) moved to a never-seen item at the last
    step (a fifth of them). Its fitted row ranks it in the top 3 of 21 for the other users of kind A
    and in the bottom quarter for kind B; a prior weight that outweighs the data keeps its starting
    row; cross-validation, seeded, gives the same rows twice and trusts this much clean data (the
    smallest weight of its grid)."""
    from sicsrec.nn.new_items import FOLD_IN_WEIGHTS, fold_in

    g = torch.Generator().manual_seed(0)
    kinds = torch.randn(1, 8, generator=g) * torch.tensor([[1.0], [-1.0]])  # opposite tastes
    kind = torch.arange(400) % 2
    users = kinds[kind] + 0.3 * torch.randn(400, 8, generator=g)
    table = torch.randn(22, 8, generator=g)  # row 0: padding; 1-20 seen; 21 never seen
    table[21] = 0.0
    scores = item_scores(users, table[:21])
    targets = torch.distributions.Categorical(logits=scores).sample()  # what each user took next
    movers = (kind == 0).nonzero().squeeze(1)[:40]
    targets[movers] = 21
    items = torch.tensor([21])
    rows, weight = fold_in(users, targets, table, items)
    assert weight == min(FOLD_IN_WEIGHTS)
    fitted = item_scores(users, table.index_copy(0, items, rows))
    rank = (fitted > fitted[:, 21:22]).sum(1)  # 0: ranked first, 20: last
    others = torch.ones(400, dtype=torch.bool)
    others[movers] = False
    assert (rank[others & (kind == 0)] <= 2).float().mean() > 0.9
    assert (rank[kind == 1] >= 15).all()
    again, _ = fold_in(users, targets, table, items)
    assert torch.equal(rows, again)
    kept, _ = fold_in(users, targets, table, items, weight=1e9)
    assert kept.abs().max() < 1e-3


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_evaluation_ranks_with_a_chain_of_its_own_split_s_inputs_never_of_its_targets(generated, features):
    """The chain that test ranks with is built from every user's history before the test target
    (the validation target included), the one validation ranks with from the histories before the
    validation target; it scores the held-out items those histories hold, and a user whose last
    item most often led to a held-out item gets it in the top 10."""
    import lightning as L

    from sicsrec.nn.attention import last_items
    from sicsrec.ranking import top_items

    dm = module(generated, features=str(features), share=0.1)
    dm.setup("test")
    for split, cut in (("valid", 2), ("test", 1), ("predict", 0)):
        histories = dm.split_histories(split)
        assert all(np.array_equal(h, s[: len(s) - cut]) for h, s in zip(histories, dm.sequences))
    torch.manual_seed(0)
    model = stage2(dm, new_item_fold_in=False).eval()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(model, dm, verbose=False)
    held = set(dm.held_out_items.tolist())
    in_histories = {int(i) for h in dm.split_histories("test") for i in h[1:]}
    assert set(model.chain.items.tolist()) == held & in_histories and held & in_histories
    batch = next(iter(dm.test_dataloader()))
    flow = model.chain.flow[last_items(batch["input"])]
    led = model.chain.items[flow.argmax(1)]  # the held-out item each user's last item led to most
    users = [u for u in range(len(flow)) if flow[u].max() >= 3 and led[u] not in batch["history"][u]]
    assert len(users) > 50
    with torch.no_grad():
        top = top_items(model.score(batch), batch["history"], 10)
    assert all(int(led[u]) in top[u][0] for u in users)
    model.hparams.new_item_chain = False
    trainer.test(model, dm, verbose=False)
    assert model.chain is None


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_rows_are_fitted_once_for_the_new_items_a_split_s_last_step_leads_to_and_test_only_reads_them(
    generated, features, forbid_fold_in
):
    """``fold_in_splits`` fits a row for each never-seen item that some test input ends with (a
    validation item), from those inputs only, and for the predict split from the whole sequences;
    test binds its split's rows — the model's item vectors then, what ``export`` writes — and the
    chain scores the never-seen items only earlier steps lead to. Test and validation fit nothing:
    without rows the chain scores every never-seen item the inputs hold."""
    import lightning as L

    from sicsrec.serving import rescored_items

    dm = module(generated, features=str(features), share=0.1)
    torch.manual_seed(0)
    model = stage2(dm).eval()
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    new = set((~model.seen_items).nonzero().squeeze(1).tolist()) - {0}
    histories = dm.split_histories("test")
    last = {int(h[-1]) for h in histories if len(h) > 1}
    earlier = {int(i) for h in histories for i in h[1:-1]}
    rows = model.fold_in_splits(dm)
    assert set(rows) == {"test", "predict"} and set(rows["test"][0].tolist()) == new & last and new & last
    whole = {int(s[-1]) for s in dm.split_histories("predict") if len(s) > 1}
    assert set(rows["predict"][0].tolist()) == new & whole

    forbid_fold_in()
    trainer.test(model, dm, verbose=False)  # no rows handed over: none fitted, the chain takes every new item
    assert model.fitted is None and set(model.chain.items.tolist()) == new & (earlier | last)
    model.new_item_rows = rows
    trainer.test(model, dm, verbose=False)
    items, fitted = model.fitted
    assert torch.equal(items, rows["test"][0]) and torch.equal(fitted, rows["test"][1])
    assert set(model.chain.items.tolist()) == (new & earlier) - last
    assert not set(rescored_items(model)) & set(items.tolist())
    with torch.no_grad():
        content = model.content_table(model.network.content_encoder)
        table = model.network.item_table(content, model.id_items(model.network.id_encoder), model.seen_items)
        assert torch.equal(model.item_vectors()[items], fitted) and not torch.allclose(table[items], fitted, atol=1e-4)
    trainer.validate(model, dm, verbose=False)
    valid = {int(i) for h in dm.split_histories("valid") for i in h[1:]}
    assert model.fitted is None and set(model.chain.items.tolist()) == new & valid and new & valid
    model.bind_split("test", dm)  # outside Lightning (a benchmark): the same binding as trainer.test
    assert torch.equal(model.fitted[1], rows["test"][1])
    model.hparams.new_item_fold_in = False  # off: rows are neither fitted nor read
    model.bind_split("test", dm)
    assert model.fitted is None and model.fold_in_splits(dm) == {}


def test_a_given_pull_this_strong_keeps_the_borrowed_rows(generated, features):
    dm = module(generated, features=str(features), share=0.1)
    torch.manual_seed(0)
    model = stage2(dm, new_item_fold_in_weight=1e9).eval()
    items, rows = model.fit_new_item_rows(dm.split_histories("test"))
    with torch.no_grad():
        assert torch.allclose(model.item_vectors()[items], rows, atol=1e-4)


def test_new_item_rows_are_read_only_for_the_checkpoint_they_were_fitted_for(tmp_path):
    from sicsrec.checkpoints import new_items_path, read_new_items, write_new_items

    ckpt = tmp_path / "best-epoch=3.ckpt"
    ckpt.write_bytes(b"weights")
    assert read_new_items(ckpt) == {}  # none written: never-seen items keep their borrowed rows
    rows = {"test": (torch.tensor([4, 9]), torch.randn(2, 8))}
    path = write_new_items(ckpt, rows)
    assert path == new_items_path(ckpt) == tmp_path / "best-epoch=3.new_items.pt"
    read = read_new_items(ckpt)
    assert torch.equal(read["test"][0], rows["test"][0]) and torch.equal(read["test"][1], rows["test"][1])
    ckpt.write_bytes(b"other weights")
    with pytest.raises(ConfigError, match="fitted for another version of best-epoch=3.ckpt: rerun `sicsrec fold-in`"):
        read_new_items(ckpt)
    path.write_bytes(b"torn")
    with pytest.raises(ConfigError, match="not new-item rows"):
        read_new_items(ckpt)
