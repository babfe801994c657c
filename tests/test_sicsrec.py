"""The SICSRec model: content encoder, stage 1 with both encoders, stage 2 with LoRA."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from sicsrec.data import SequenceDataModule
from sicsrec.errors import ConfigError
from sicsrec.modules import Stage1Module, Stage2Module
from sicsrec.modules.stage2 import ITEM_PARTS
from sicsrec.nn.content_encoder import ContentEncoder
from sicsrec.nn.losses import content_contrastive

TINY = dict(hidden_size=32, inner_size=32, dropout=0.1, attn_dropout=0.1)


def datamodule(generated, features):
    return SequenceDataModule(str(generated), max_len=10, batch_size=256, features=str(features))


def fit(model, dm, tmp_path, epochs=2, callbacks=()):
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="valid/hr@10", mode="max")
    trainer = L.Trainer(
        max_epochs=epochs,
        reload_dataloaders_every_n_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ckpt, *callbacks],
        num_sanity_val_steps=0,
    )
    trainer.fit(model, dm)
    return trainer, ckpt.best_model_path


@pytest.fixture(scope="module")
def stage1_checkpoint(generated, features, tmp_path_factory):
    L.seed_everything(0, verbose=False)
    model = Stage1Module(use_content=True, **TINY)
    trainer, path = fit(model, datamodule(generated, features), tmp_path_factory.mktemp("s1"))
    assert {"valid/id/hr@10", "valid/content/hr@10", "valid/hr@10"} <= set(trainer.callback_metrics)
    return path


def test_content_vectors_are_normalised_sums_over_present_modalities():
    torch.manual_seed(0)  # with zero biases, an input that no ReLU unit passes projects to 0: 16 → 8 units
    enc = ContentEncoder({"text": 16, "image": 8}, hidden_size=4, inner_size=4, max_len=5)
    feats = {"text": torch.randn(4, 16), "image": torch.randn(4, 8)}
    masks = {"text": torch.ones(4, dtype=torch.bool), "image": torch.tensor([True, True, False, True])}
    table = enc.item_vectors(feats, masks)
    assert torch.all(table[0] == 0)
    assert torch.allclose(table[1:].norm(dim=-1), torch.ones(3))
    expected = torch.nn.functional.normalize(enc.projections["text"](feats["text"][2]), dim=-1)
    assert torch.allclose(table[2], expected, atol=1e-6)  # no cover: text alone, no zero image vector


def test_stage1_losses_stay_in_their_own_encoder(generated, features):
    dm = datamodule(generated, features)
    dm.setup("fit")
    model = Stage1Module(use_content=True, **TINY)
    model.bind_features(dm)
    model.bind_data(dm.num_items, dm.max_len)
    batch = next(iter(dm.train_dataloader()))
    for use_id, use_content in ((True, False), (False, True)):
        model.zero_grad()
        model.hparams.use_id, model.hparams.use_content = use_id, use_content
        model.training_step(batch, 0).backward()
        id_grads = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.id_encoder.parameters())
        content_grads = any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.content_encoder.parameters())
        assert (id_grads, content_grads) == (use_id, use_content)


def test_contrastive_masks_targets_equal_to_the_positive():
    torch.manual_seed(0)
    user, content = torch.randn(4, 8), torch.randn(4, 8)
    targets = torch.tensor([3, 5, 3, 9])
    content[2] = content[0]
    loss = content_contrastive(user, content, targets, 0.1)
    u, c = torch.nn.functional.normalize(user, dim=-1), torch.nn.functional.normalize(content, dim=-1)
    logits = u @ c.T / 0.1
    logits[0, 2] = logits[2, 0] = float("-inf")
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, torch.arange(4)))


def test_lora_adds_under_five_percent_of_each_frozen_encoder(generated, features, tmp_path):
    L.seed_everything(0, verbose=False)
    dm = datamodule(generated, features)
    model = Stage1Module(use_content=True)  # default size: hidden 256
    model.bind_features(dm)
    model.bind_data(dm.num_items, dm.max_len)
    trainer = L.Trainer(
        max_epochs=0, logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path
    )
    trainer.fit(model, dm)
    trainer.save_checkpoint(tmp_path / "s1.ckpt")
    stage2 = Stage2Module(str(tmp_path / "s1.ckpt"))
    stage2.bind_features(dm)
    stage2.bind_data(dm.num_items, dm.max_len)
    rank, targets = stage2.hparams.lora_rank, set(stage2.hparams.lora_targets)
    for name in ("id_encoder", "content_encoder"):
        # counted from the stage-1 model alone: rank × (in + out) for every targeted Linear
        encoder = getattr(model, name)
        expected = sum(
            rank * (m.in_features + m.out_features)
            for n, m in encoder.named_modules()
            if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets
        )
        frozen = sum(p.numel() for p in encoder.parameters())
        lora = sum(p.numel() for n, p in getattr(stage2.network, name).named_parameters() if "lora_" in n)
        assert lora == expected > 0, (name, lora, expected)  # every targeted layer has its adapter
        assert lora < 0.05 * frozen, (name, lora, frozen)
        assert stage2.lora_report()[name] == {"lora": lora, "frozen": frozen, "share": lora / frozen}


def test_a_lora_target_that_matches_no_layer_is_an_error_not_silently_dropped(generated, features, stage1_checkpoint):
    from sicsrec.content.encoders import TextEncoder
    from sicsrec.modules import AlignModule
    from tests.test_content import TINY_TEXT

    dm = datamodule(generated, features)
    model = Stage2Module(stage1_checkpoint, lora_targets=["query", "value", "ffn_in"])  # ffn_in: a renamed layer
    model.bind_features(dm)
    with pytest.raises(
        ConfigError,
        match=r"lora_targets \['ffn_in'\] match no layer of the ID encoder or content "
        r"encoder \(Linear layers there end in: .*dense_in",
    ):
        model.bind_data(dm.num_items, dm.max_len)
    with pytest.raises(ConfigError, match=r"lora_targets \['dense_in'\] match no layer of the minilm"):
        AlignModule(TextEncoder(**TINY_TEXT), None, trainable="lora", lora_targets=["query", "dense_in"])


def test_a_stage1_checkpoint_saved_under_the_old_names_starts_stage2_as_before(
    generated, features, stage1_checkpoint, tmp_path
):
    old = torch.load(stage1_checkpoint, map_location="cpu", weights_only=True)
    hp = old["hyper_parameters"]
    hp["temperature"], hp["alpha1"] = hp.pop("id_temperature"), hp.pop("contrastive_weight")
    torch.save(old, tmp_path / "old.ckpt")
    dm = datamodule(generated, features)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    scores = []
    for path in (stage1_checkpoint, tmp_path / "old.ckpt"):
        torch.manual_seed(0)  # the same fresh decoder and fusion
        model = Stage2Module(str(path))
        model.bind_features(dm)
        model.bind_data(dm.num_items, dm.max_len)
        with torch.no_grad():
            scores.append(model.eval().score(batch))
    assert torch.equal(scores[0], scores[1])


def test_stage2_checkpoint_holds_only_what_stage2_trained_and_rebuilds_exactly(
    generated, features, stage1_checkpoint, tmp_path
):
    L.seed_everything(0, verbose=False)
    dm = datamodule(generated, features)
    model = Stage2Module(stage1_checkpoint, decoder_dropout=0.1, decoder_attn_dropout=0.1, item_dropout=0.1)
    trainer, path = fit(model, dm, tmp_path)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(saved["state_dict"]) == trained
    # of the stage-1 encoders: LoRA and the parts that carry item information, never a Transformer weight
    encoder_keys = [k for k in saved["state_dict"] if k.startswith(("network.id_encoder.", "network.content_encoder."))]
    assert encoder_keys and all("lora_" in k or k.split(".")[2] in ITEM_PARTS for k in encoder_keys)
    assert saved["stage1_checkpoint"]["sha256"] == model.hparams.stage1_sha256
    expected = trainer.test(model, dm, ckpt_path=path, verbose=False)[0]
    fresh = Stage2Module(stage1_checkpoint, decoder_dropout=0.1, decoder_attn_dropout=0.1, item_dropout=0.1)
    again = L.Trainer(logger=False, enable_progress_bar=False).test(
        fresh, datamodule(generated, features), ckpt_path=path, verbose=False
    )[0]
    assert again == pytest.approx(expected, abs=1e-6)
    # a checkpoint from when stage 2 nested the stage-1 module (keys ``stage1.id_encoder.…``) loads the same
    saved["state_dict"] = {
        k.replace("network.", "stage1." if k in encoder_keys else "", 1): v for k, v in saved["state_dict"].items()
    }
    torch.save(saved, tmp_path / "nested.ckpt")
    fresh = Stage2Module(stage1_checkpoint, decoder_dropout=0.1, decoder_attn_dropout=0.1, item_dropout=0.1)
    old = L.Trainer(logger=False, enable_progress_bar=False).test(
        fresh, datamodule(generated, features), ckpt_path=tmp_path / "nested.ckpt", verbose=False
    )[0]
    assert old == again


def test_stage2_refuses_a_changed_stage1_checkpoint(generated, features, stage1_checkpoint, tmp_path):
    dm = datamodule(generated, features)
    model = Stage2Module(stage1_checkpoint, stage1_sha256="0" * 64)
    model.bind_features(dm)
    with pytest.raises(ConfigError, match="changed since"):
        model.bind_data(dm.num_items, dm.max_len)


@pytest.mark.parametrize("use_decoder", [True, False])
def test_ensemble_head_starts_from_the_sum_of_both_stage1_encoders_and_method_head_from_the_id_encoder(
    generated, features, stage1_checkpoint, use_decoder
):
    """Untrained, the ensemble head scores what the two stage-1 encoders score together; the method
    head scores what the stage-1 ID encoder scores (its user vector starts as the ID stream)."""
    dm = datamodule(generated, features)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    stage1 = Stage1Module.load_from_checkpoint(stage1_checkpoint, weights_only=True)
    stage1.bind_features(dm)
    stage1.eval()
    stage2 = Stage2Module(stage1_checkpoint, head="ensemble", use_decoder=use_decoder)
    stage2.bind_features(dm)
    stage2.bind_data(dm.num_items, dm.max_len)
    stage2.eval()
    with torch.no_grad():
        parts = stage1.scores(batch)
        fused = stage2.scores(batch)["main"]
    expected = parts["id"] + parts["content"]
    finite = torch.isfinite(expected)
    assert torch.equal(finite, torch.isfinite(fused))
    assert torch.allclose(fused[finite], expected[finite], atol=1e-4)
    method = Stage2Module(stage1_checkpoint, use_decoder=use_decoder)
    method.bind_features(dm)
    method.bind_data(dm.num_items, dm.max_len)
    method.eval()
    with torch.no_grad():
        assert torch.allclose(method.scores(batch)["main"][:, 1:], parts["id"][:, 1:], atol=1e-4)


def method_model(stage1_checkpoint, dm, **kw) -> Stage2Module:
    model = Stage2Module(stage1_checkpoint, **kw)
    model.bind_features(dm)
    model.bind_data(dm.num_items, dm.max_len)
    return model


def test_method_head_trains_with_the_scores_it_is_evaluated_with(generated, features, stage1_checkpoint):
    """The training loss at every position equals the cross-entropy of the evaluation scores of that
    position's prefix: one scoring function, the same normalisation and τ, in both."""
    dm = datamodule(generated, features)
    dm.setup("fit")
    L.seed_everything(0, verbose=False)
    model = method_model(stage1_checkpoint, dm, contrastive_weight=0.0).eval()
    with torch.no_grad():  # a trained fusion, so the decoder and content streams matter too
        model.network.fusion.delta.weight.normal_(0.0, 0.05)
    batch = next(iter(dm.train_dataloader()))
    batch = {k: v[:6] for k, v in batch.items()}
    loss = model.training_step(batch, 0)
    ce = []
    with torch.no_grad():
        for row, pos in (batch["target"] > 0).nonzero().tolist():
            scores = model.scores({"input": batch["input"][row : row + 1, : pos + 1]})["main"]
            ce.append(torch.nn.functional.cross_entropy(scores, batch["target"][row, pos : pos + 1]))
    assert loss.item() == pytest.approx(torch.stack(ce).mean().item(), rel=1e-5)


@pytest.mark.parametrize("head", ["method", "ensemble"])
def test_the_contrastive_gradient_reaches_the_id_scored_user_vector_only_in_the_method_head(
    generated, features, stage1_checkpoint, head
):
    dm = datamodule(generated, features)
    dm.setup("fit")
    model = method_model(stage1_checkpoint, dm, head=head).eval()
    id_table = model.network.id_encoder.item_embedding.weight
    id_table.requires_grad_(True)  # frozen in the ensemble head: followed here all the same
    batch = next(iter(dm.train_dataloader()))
    mask = batch["target"] > 0
    targets = batch["target"][mask]
    content = model.content_table(model.network.content_encoder)
    users = model.network(batch["input"], content, all_positions=True)[mask]
    contrast = content_contrastive(model.network.content_part(users), content[targets], targets, 0.05)
    (grad,) = torch.autograd.grad(contrast, id_table, allow_unused=True)
    reaches = grad is not None and grad.abs().sum() > 0
    # at the start the ensemble's fusion passes the ID half through untouched by content: nothing
    # pulls the ID-scored representation towards content; the method head's one vector is pulled
    assert reaches == (head == "method")


def test_method_head_trains_the_item_parts_and_not_the_transformer_weights(
    generated, features, stage1_checkpoint, tmp_path
):
    L.seed_everything(0, verbose=False)
    dm = datamodule(generated, features)
    model = Stage2Module(stage1_checkpoint)
    model.bind_features(dm)
    model.bind_data(dm.num_items, dm.max_len)
    encoders = torch.nn.ModuleDict(
        {"id_encoder": model.network.id_encoder, "content_encoder": model.network.content_encoder}
    )
    before = {n: p.detach().clone() for n, p in encoders.named_parameters()}
    trainer, _ = fit(model, dm, tmp_path, epochs=1)
    moved = {n for n, p in encoders.named_parameters() if not torch.equal(p.detach(), before[n])}
    expected = {
        "id_encoder.item_embedding.weight",
        "id_encoder.position_embedding.weight",
        "content_encoder.position_embedding.weight",
        "id_encoder.norm.weight",
        "content_encoder.norm.weight",
    }
    assert expected <= moved, expected - moved
    assert any(n.startswith("content_encoder.projections.") for n in moved)
    assert any("lora_B" in n for n in moved)
    frozen = {n for n in before if n.split(".")[1] == "layers" and "lora_" not in n}
    assert frozen and not frozen & moved  # the Transformer blocks' own weights stay as stage 1 left them
    tested = trainer.test(model, dm, verbose=False)[0]
    buckets = [tested[f"test/{b}/users"] for b in ("cold", "rare", "warm")]
    assert sum(buckets) == len(dm.sequences), buckets  # every user in exactly one warm/cold bucket


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_new_parts_lr_steps_what_stage2_adds_at_its_own_rate_and_stage1_parts_at_the_optimizers(
    generated, features, stage1_checkpoint
):
    """LoRA, decoder and fusion get ``new_parts_lr``, the parts trained in stage 1 the optimizer's
    rate — and one Adam step (about lr · sign(grad)) moves them by those rates."""
    dm = datamodule(generated, features)
    dm.setup("fit")
    L.seed_everything(0, verbose=False)
    adam = lambda params: torch.optim.Adam(params, lr=1e-4)  # noqa: E731
    model = method_model(stage1_checkpoint, dm, new_parts_lr=1e-2, optimizer=adam, scheduler=None).train()
    with torch.no_grad():  # a fusion map that is not zero, as after some training: the decoder gets gradients
        model.network.fusion.delta.weight.normal_(0.0, 0.05)
    optimizer = model.configure_optimizers()
    lr = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    added = {n for n in trained if "lora_" in n or n.startswith(("network.decoder.", "network.fusion."))}
    assert added and {lr[id(trained[n])] for n in added} == {1e-2}
    assert {lr[id(p)] for n, p in trained.items() if n not in added} == {1e-4}  # item table, positions, …
    before = {n: p.detach().clone() for n, p in trained.items()}
    model.training_step(next(iter(dm.train_dataloader())), 0).backward()
    optimizer.step()
    step = {n: (p.detach() - before[n]).abs().max().item() for n, p in trained.items()}
    assert step["network.decoder.layers.0.feed_forward.dense_in.weight"] == pytest.approx(1e-2, rel=0.05)
    assert step["network.id_encoder.item_embedding.weight"] == pytest.approx(1e-4, rel=0.05)
    plain = method_model(stage1_checkpoint, dm, optimizer=adam, scheduler=None)
    assert {g["lr"] for g in plain.configure_optimizers().param_groups} == {1e-4}  # null: one rate for all


def test_one_stage_training_trains_every_part_and_rebuilds_from_its_own_checkpoint(generated, features, tmp_path):
    """The "no stage 2" ablation: no stage-1 checkpoint, fresh encoders trained in full (no LoRA)."""
    L.seed_everything(0, verbose=False)
    dm = datamodule(generated, features)
    model = Stage2Module(None, encoders=TINY, head="ensemble", item_dropout=0.0)
    model.bind_features(dm)
    model.bind_data(dm.num_items, dm.max_len)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert not any("lora_" in n for n in before)
    assert all(p.requires_grad for p in model.parameters())
    trainer, path = fit(model, dm, tmp_path)
    moved = {
        n.split(".")[0] + "." + n.split(".")[1]
        for n, p in model.named_parameters()
        if not torch.equal(p.detach(), before[n])
    }
    assert {"network.id_encoder", "network.content_encoder", "network.decoder", "network.fusion"} <= moved
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert set(saved["state_dict"]) == set(before) and "stage1_checkpoint" not in saved
    expected = trainer.test(model, dm, ckpt_path=path, verbose=False)[0]
    fresh = Stage2Module(None, encoders=TINY, head="ensemble", item_dropout=0.0)
    again = L.Trainer(logger=False, enable_progress_bar=False).test(
        fresh, datamodule(generated, features), ckpt_path=path, verbose=False
    )[0]
    assert again == pytest.approx(expected, abs=1e-6)
    wrong = Stage2Module(None, encoders={"num_items": 3})
    wrong.bind_features(dm)
    with pytest.raises(ConfigError, match="come from the data"):
        wrong.bind_data(dm.num_items, dm.max_len)


def test_validating_the_starting_point_keeps_it_when_tuning_only_hurts(
    generated, features, stage1_checkpoint, tmp_path
):
    """A learning rate that wrecks the model: the best checkpoint must be the untuned start (the sum
    of both stage-1 encoders), early stopping must count patience from it, and testing "best" must
    give the start's numbers."""
    from lightning.pytorch.callbacks import EarlyStopping

    from sicsrec.callbacks import ValidateStartingPoint

    L.seed_everything(0, verbose=False)
    wreck = lambda params: torch.optim.Adam(params, lr=0.3)  # noqa: E731
    model = Stage2Module(stage1_checkpoint, head="ensemble", optimizer=wreck, scheduler=None)  # no warm-up
    dm = datamodule(generated, features)
    start = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        model, dm, verbose=False
    )[0]
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="valid/hr@10", mode="max", filename="best")
    trainer = L.Trainer(
        max_epochs=6,
        reload_dataloaders_every_n_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[ValidateStartingPoint(), ckpt, EarlyStopping("valid/hr@10", mode="max", patience=2)],
    )
    trainer.fit(model, dm)
    assert trainer.current_epoch == 2  # two epochs without beating the start, then stop
    assert float(ckpt.best_model_score) == pytest.approx(start["valid/hr@10"])
    assert float(trainer.callback_metrics["valid/hr@10"]) < start["valid/hr@10"]  # tuning really did hurt
    saved = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0 and saved["global_step"] == 0
    assert all(torch.count_nonzero(v) == 0 for k, v in saved["state_dict"].items() if k.startswith("fusion.delta"))
    tested = trainer.test(model, dm, ckpt_path="best", verbose=False)[0]
    assert float(ckpt.best_model_score) == pytest.approx(start["valid/hr@10"])  # loading it keeps the record
    again = L.Trainer(logger=False, enable_progress_bar=False).test(
        Stage2Module(stage1_checkpoint, head="ensemble"), datamodule(generated, features), verbose=False
    )[0]
    assert tested == pytest.approx(again, abs=1e-6)


def test_a_resumed_stage2_fit_does_not_validate_its_start_again(
    generated, features, stage1_checkpoint, tmp_path, monkeypatch
):
    from sicsrec.callbacks import ValidateStartingPoint

    evaluations = []
    original = Stage2Module.evaluate
    monkeypatch.setattr(Stage2Module, "evaluate", lambda self, loader: evaluations.append(1) or original(self, loader))

    def trainer(epochs):
        ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="valid/hr@10", mode="max", filename="best", save_last=True)
        return L.Trainer(
            max_epochs=epochs,
            reload_dataloaders_every_n_epochs=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[ValidateStartingPoint(), ckpt],
        ), ckpt

    L.seed_everything(0, verbose=False)
    first, _ = trainer(1)
    first.fit(Stage2Module(stage1_checkpoint, item_dropout=0.1), datamodule(generated, features))
    assert len(evaluations) == 1
    start = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    start_best = start["callbacks"][next(k for k in start["callbacks"] if k.startswith("ModelCheckpoint"))]
    resumed, ckpt = trainer(2)
    resumed.fit(
        Stage2Module(stage1_checkpoint, item_dropout=0.1),
        datamodule(generated, features),
        ckpt_path=str(tmp_path / "last.ckpt"),
    )
    assert len(evaluations) == 1  # the start was validated in the first run only
    assert resumed.current_epoch == 2
    assert float(ckpt.best_model_score) >= float(start_best["best_model_score"])  # the record carried over


def test_a_stage2_checkpoint_refuses_another_stage1_file_under_the_same_path(
    generated, features, stage1_checkpoint, tmp_path
):
    import shutil

    stage1 = tmp_path / "stage1.ckpt"
    shutil.copy(stage1_checkpoint, stage1)
    L.seed_everything(0, verbose=False)
    _, path = fit(Stage2Module(str(stage1)), datamodule(generated, features), tmp_path, epochs=1)
    other = torch.load(stage1, map_location="cpu", weights_only=True)
    other["state_dict"]["id_encoder.item_embedding.weight"] += 0.01  # another stage-1 model, same path
    torch.save(other, stage1)
    with pytest.raises(ConfigError, match="trained on a stage-1 checkpoint with sha256"):
        L.Trainer(logger=False, enable_progress_bar=False).test(
            Stage2Module(str(stage1)), datamodule(generated, features), ckpt_path=path
        )


def test_ninerec_protocol_masks_the_history_in_the_models_own_scores(generated, features, stage1_checkpoint):
    from sicsrec.evaluation import metrics_from_ranks, target_ranks

    tested = {}
    for protocol in ("recbole", "ninerec"):
        model = Stage1Module.load_from_checkpoint(stage1_checkpoint, weights_only=True, protocol=protocol)
        tested[protocol] = L.Trainer(logger=False, enable_progress_bar=False).test(
            model, datamodule(generated, features), verbose=False
        )[0]
    dm = datamodule(generated, features)
    dm.setup("test")
    model.bind_features(dm)
    model.eval()
    ranks = {"id": [], "content": []}
    with torch.no_grad():
        for batch in dm.test_dataloader():
            for view, scores in model.scores(batch).items():
                for row, (target, history) in enumerate(zip(batch["target"].tolist(), batch["history"].tolist())):
                    seen = [h for h in history if h not in (0, target)]
                    scores[row, seen] = float("-inf")  # masked by hand, item by item
                ranks[view].append(target_ranks(scores, batch["target"]))
    for view in ("id", "content"):
        expected = metrics_from_ranks(torch.cat(ranks[view]))
        assert tested["ninerec"][f"test/{view}/ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-6)
        assert tested["ninerec"][f"test/{view}/mrr"] == pytest.approx(expected["mrr"], abs=1e-6)
        assert tested["ninerec"][f"test/{view}/mrr"] > tested["recbole"][f"test/{view}/mrr"]  # history was ranked


def test_a_stage1_file_whose_run_folder_was_renamed_is_found_by_its_sha256_not_by_its_name(tmp_path, monkeypatch):
    """A variant's runs renamed to the seed's folder (``text_only-seed1`` → ``seed1``): the stage-1
    file is the one of the recorded SHA-256 among its step's run folders, never another run's."""
    from pathlib import Path

    from sicsrec.checkpoints import file_sha256, locate_stage1

    monkeypatch.chdir(tmp_path)
    step = Path("runs/shop/stage1")
    for run, content in (("text_only-seed1", b"the stage-1 weights"), ("text_image-seed1", b"other weights")):
        (step / run / "checkpoints").mkdir(parents=True)
        (step / run / "checkpoints" / "best.ckpt").write_bytes(content)
    stage2 = Path("runs/shop/stage2/text_only-seed1/checkpoints/best.ckpt")
    recorded = step / "text_only-seed1" / "checkpoints" / "best.ckpt"
    record = {
        "path": str(recorded),
        "absolute": str(recorded.resolve()),
        "from_checkpoint_folder": "../../../stage1/text_only-seed1/checkpoints/best.ckpt",
        "sha256": file_sha256(recorded),
    }
    assert locate_stage1(str(recorded), stage2, record) == str(recorded)
    (step / "text_only-seed1").rename(step / "seed1")
    found = locate_stage1(str(recorded), Path("runs/shop/stage2/seed1/checkpoints/best.ckpt"), record)
    assert Path(found).resolve() == (step / "seed1" / "checkpoints" / "best.ckpt").resolve()
    (step / "seed1" / "checkpoints" / "best.ckpt").write_bytes(b"retrained")  # no file of that SHA-256 is left
    assert locate_stage1(str(recorded), stage2, record) == str(recorded)  # the model then names the problem


def test_a_stage2_checkpoint_tests_predicts_and_serves_from_another_folder_after_its_runs_moved(
    generated, features, stage1_checkpoint, tmp_path, monkeypatch
):
    import json
    import shutil
    from pathlib import Path

    import yaml

    from sicsrec.cli import main
    from sicsrec.serving import Recommender

    work = tmp_path / "work"
    (work / "runs" / "s1").mkdir(parents=True)
    shutil.copy(stage1_checkpoint, work / "runs" / "s1" / "best.ckpt")
    monkeypatch.chdir(work)  # paths as a chain writes them: relative to the working directory
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"filename": "best"}}
            ],
        },
        "model": {
            "class_path": "sicsrec.modules.Stage2Module",
            "init_args": {"stage1_checkpoint": "runs/s1/best.ckpt"},
        },
        "data": {
            "class_path": "sicsrec.data.SequenceDataModule",
            "init_args": {"root": str(generated), "features": str(features), "max_len": 10, "batch_size": 256},
        },
    }
    Path("s2.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "--config", "s2.yaml"])
    expected = json.loads(Path("runs/lightning_logs/version_0/metrics.json").read_text())
    moved = shutil.move(work, tmp_path / "moved")  # the whole folder: runs/ copied to another place
    run = Path(moved) / "runs" / "lightning_logs" / "version_0"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    common = ["--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "best.ckpt")]
    main(["test", *common, "--trainer.logger", "false", "--trainer.default_root_dir", "t"])
    tested = json.loads(Path("t/metrics.json").read_text())
    assert {k: v for k, v in tested.items() if k.startswith("test/")} == {
        k: v for k, v in expected.items() if k.startswith("test/")
    }
    main(["predict", *common, "--trainer.logger", "false", "--predictions.path", str(tmp_path / "p.jsonl")])
    predicted = {row["user"]: row for row in map(json.loads, (tmp_path / "p.jsonl").read_text().splitlines())}
    server = Recommender.load(run)  # the run folder alone: its config, its best checkpoint, the stage-1 file
    history = [server.data.item_ids[i - 1] for i in server.data.sequence(0)]
    assert len(predicted) == 600
    assert server.recommend([history])[0].items == predicted[server.data.user_ids[0]]["items"]


def test_export_of_a_cosine_scored_model_searched_exactly_gives_recommends_ranking(generated, features, tmp_path):
    """The content encoder scores cosine / τ: the manifest says so, and normalising both sides of
    the exported vectors reproduces ``recommend``'s top 10 (the ID-encoder case is in test_cli)."""
    import json

    import numpy as np

    from sicsrec.serving import Recommender

    L.seed_everything(0, verbose=False)
    dm = datamodule(generated, features)
    model = Stage1Module(use_id=False, **TINY)
    model.bind_features(dm)
    model.bind_data(dm.num_items, dm.max_len)
    server = Recommender(model, dm)
    manifest = json.loads(server.export(tmp_path).read_text())
    assert (manifest["scoring"], manifest["temperature"]) == ("cosine", 0.05)
    items = np.load(tmp_path / manifest["vectors"])
    items = items / np.linalg.norm(items, axis=1, keepdims=True)
    histories = [[server.data.item_ids[i - 1] for i in server.data.sequence(u)] for u in range(30)]
    for history, answer in zip(histories, server.recommend(histories, with_vectors=True)):
        user = np.asarray(answer.vector, dtype=np.float32)
        found = items @ (user / np.linalg.norm(user)) / manifest["temperature"]
        found[[manifest["item_ids"].index(i) for i in history]] = -np.inf
        # an untrained model scores many items nearly alike: compare scores, not the order of near-ties
        mine = found[[manifest["item_ids"].index(i) for i in answer.items]]
        assert np.allclose(mine, answer.scores, atol=1e-3)
        assert np.allclose(np.sort(found)[::-1][:10], answer.scores, atol=1e-3)  # and they are the top 10


@pytest.mark.parametrize("cold_neighbours", [1, 0])
def test_predict_ranks_a_never_seen_item_through_its_content(generated, features, stage1_checkpoint, cold_neighbours):
    """An item no training part holds, given the content of the item the model ranks first for a
    user, enters that user's predicted top 10, and leaves it given the content of the item ranked
    last — with ``cold_neighbours`` (1 here: this tiny content encoder puts every pair of items at
    a cosine above 0.99, so 5 neighbours would weigh alike); without, its content changes nothing."""
    from sicsrec.ranking import top_items

    dm = SequenceDataModule(
        str(generated), max_len=10, batch_size=256, features=str(features), cold_items=0.1, cold_seed=0
    )
    dm.setup("test")
    model = method_model(stage1_checkpoint, dm, cold_neighbours=cold_neighbours).eval()
    new = int(dm.held_out_items[0])
    batch = next(iter(dm.test_dataloader()))
    user = next(r for r in range(len(batch["input"])) if new not in batch["history"][r].tolist())

    def ranked(content_of: int | None) -> tuple[list[int], torch.Tensor]:
        if content_of is not None:
            model.features_text[new] = model.features_text[content_of]
        model.on_predict_epoch_start()  # the content table is computed again
        with torch.no_grad():
            out = model.predict_step(batch, 0)
        return top_items(out["scores"], out["history"], 10)[user][0], out["scores"][user]

    top, scores = ranked(None)
    seen = model.seen_items
    best = next(i for i in top if seen[i])
    order = [i for i in scores.argsort().tolist() if seen[i] and i not in batch["history"][user].tolist()]
    worst = order[0]
    assert not seen[new] and seen[best] and seen[worst]
    with_best, _ = ranked(best)
    with_worst, _ = ranked(worst)
    if cold_neighbours:
        assert new in with_best and new not in with_worst
    else:
        assert (new in with_best) == (new in with_worst) == (new in top)


def test_keep_each_encoder_best_writes_each_encoder_from_its_own_best_epoch(generated, features, tmp_path):
    """The file ``KeepEachEncoderBest`` writes holds the ID encoder's weights from the epoch of its
    best valid/id/hr@10 and the content encoder's from the epoch of its own best — here scripted
    values (ID best at epoch 1, content at epoch 3) logged in place of the real ones, so that the
    peaks do not hang on training noise — and the method head started from that file validates at
    the ID encoder's real value of that epoch."""
    from sicsrec.callbacks import KeepEachEncoderBest

    scripted = {"valid/id/hr@10": [0.1, 0.5, 0.3, 0.2, 0.4], "valid/content/hr@10": [0.1, 0.2, 0.3, 0.6, 0.5]}

    class Scripted(Stage1Module):
        real, weights = [], []

        def _compute_metrics(self, metrics, prefix):
            values = super()._compute_metrics(metrics, prefix)
            if prefix == "valid" and not self.trainer.sanity_checking:
                epoch = len(self.real)
                self.real.append(float(values["valid/id/hr@10"]))
                self.weights.append({k: v.detach().clone() for k, v in self.state_dict().items()})
                values.update({key: torch.tensor(series[epoch]) for key, series in scripted.items()})
            return values

    L.seed_everything(1, verbose=False)
    dm = datamodule(generated, features)
    model = Scripted(use_content=True, **TINY)
    fit(model, dm, tmp_path, epochs=5, callbacks=[KeepEachEncoderBest()])
    saved = torch.load(tmp_path / "each_encoder_best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    for prefix, epoch in (("id_encoder.", 1), ("content_encoder.", 3)):
        keys = [k for k in saved if k.startswith(prefix)]
        assert keys and all(torch.equal(saved[k], model.weights[epoch][k]) for k in keys)
        assert any(not torch.equal(saved[k], model.weights[-1][k]) for k in keys)  # not the last epoch's
    start = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        Stage2Module(str(tmp_path / "each_encoder_best.ckpt")), dm, verbose=False
    )[0]
    assert start["valid/hr@10"] == pytest.approx(model.real[1], abs=1e-6)
