"""``sicsrec features``: encode every item once with the (aligned or plain) encoders, cached."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from sicsrec.content.encoders import ImageEncoder, TextEncoder, weights_digest
from sicsrec.data.features import (
    MODALITIES,
    ItemFeatures,
    cached_features,
    compute_features,
    feature_key,
    image_table_digest,
    load_features,
    text_table_digest,
)
from sicsrec.data.formats import Reader, load_cover
from sicsrec.data.prepare import PreparedData, prepare
from sicsrec.errors import ConfigError, DataError
from sicsrec.io import write_json_atomic

log = logging.getLogger(__name__)


def text_item_features(
    encoder: TextEncoder,
    data: PreparedData,
    text_column: str = "en",
    batch_size: int = 128,
    cache_dir: str | None = None,
    progress: bool = True,
) -> ItemFeatures:
    titles = data.titles_in(text_column)
    identity = {**encoder.identity(), "text_column": text_column}
    key = feature_key(identity, weights_digest(encoder), text_table_digest(titles))
    path = cached_features(data.name, "text", key, cache_dir)
    found = load_features(path)
    if found is not None and found.meta.get("key") == key:
        return found
    order = np.argsort([len(t) for t in titles], kind="stable")  # similar lengths pad less

    def batches():
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            yield idx + 1, [titles[j] for j in idx]

    encoder.eval()
    return compute_features(
        path,
        data.num_items + 1,
        encoder.dim,
        batches(),
        lambda texts: encoder(**encoder.tokenize(texts)),
        {"key": key, "modality": "text", "identity": identity, "dataset": data.name},
        progress,
    )


def image_item_features(
    encoder: ImageEncoder, data: PreparedData, batch_size: int = 64, cache_dir: str | None = None, progress: bool = True
) -> ItemFeatures:
    """Covers that are missing or unreadable stay masked (counted in the .json), never zeros posing as features."""
    if not data.images:
        raise DataError(data.name, "this dataset has no covers: leave the image encoder out")
    identity = encoder.identity()
    key = feature_key(identity, weights_digest(encoder), image_table_digest(data.images))
    path = cached_features(data.name, "image", key, cache_dir)
    found = load_features(path)
    if found is not None and found.meta.get("key") == key:
        return found
    skipped = {"missing": 0, "unreadable": 0}

    def batches():
        rows, images = [], []
        for item, p in enumerate(data.images, start=1):
            img = load_cover(p)
            if img is None:
                skipped["missing" if p is None else "unreadable"] += 1
                continue
            rows.append(item)
            images.append(img)
            if len(rows) == batch_size:
                yield np.array(rows), images
                rows, images = [], []
        if rows:
            yield np.array(rows), images

    encoder.eval()
    features = compute_features(
        path,
        data.num_items + 1,
        encoder.dim,
        batches(),
        lambda imgs: encoder(encoder.preprocess(imgs)),
        {"key": key, "modality": "image", "identity": identity, "dataset": data.name},
        progress,
    )
    if sum(skipped.values()):
        log.warning(
            "%s: %d covers missing, %d unreadable: those items have no image feature",
            data.name,
            skipped["missing"],
            skipped["unreadable"],
        )
    return features


def featurize(
    root: str,
    text: TextEncoder | None = None,
    image: ImageEncoder | None = None,
    align_checkpoint: str | None = None,
    text_column: str = "en",
    batch_size: int = 128,
    out: str = "runs/features",
    min_seq_len: int = 3,
    cache_dir: str | None = None,
    threads: int | None = None,
    reader: Reader | None = None,
) -> dict:
    """Encode every item of the dataset at ``root`` and write ``<out>/features.json``.

    Args:
        root: dataset folder.
        text: text encoder (null: no text features).
        image: image encoder (null: no image features).
        align_checkpoint: an ``align`` checkpoint; its fine-tuned encoders replace ``text``/``image``.
        text_column: title language (``en`` or ``zh``).
        batch_size: items per encoder batch.
        out: folder for ``features.json``, which records where the cached features are.
        min_seq_len: as in data preparation (the item table is the same either way).
        cache_dir: cache folder (default ``$SICSREC_CACHE`` or ``~/.cache/sicsrec``).
        threads: torch CPU threads (default: torch's choice).
        reader: the dataset's file layout, as in the sequence DataModule (null: detected from the files).
    """
    if threads:
        torch.set_num_threads(threads)
    if align_checkpoint is not None:
        if text is not None or image is not None:
            raise ConfigError(
                "give either align_checkpoint or text/image encoders, not both: "
                "the checkpoint's encoders are the aligned ones"
            )
        from sicsrec.modules.align import AlignModule

        module = AlignModule.load_from_checkpoint(align_checkpoint, map_location="cpu", weights_only=True)
        text, image = module.merged_encoders()
    if text is None and image is None:
        raise ConfigError("nothing to encode: set text and/or image (or align_checkpoint)")
    data = prepare(root, reader, min_seq_len, False, cache_dir)
    manifest = {"dataset": data.name, "data_key": data.key, "align_checkpoint": align_checkpoint}
    if text is not None:
        f = text_item_features(text, data, text_column, batch_size, cache_dir)
        manifest["text"] = {
            "path": str(f.path),
            "key": f.meta["key"],
            "dim": f.dim,
            "items_with_features": int(f.mask.sum()),
        }
    if image is not None:
        f = image_item_features(image, data, max(1, batch_size // 2), cache_dir)
        manifest["image"] = {
            "path": str(f.path),
            "key": f.meta["key"],
            "dim": f.dim,
            "items_with_features": int(f.mask.sum()),
        }
    write_json_atomic(Path(out) / "features.json", manifest)
    print(
        f"features of {data.num_items} items: "
        + ", ".join(
            f"{m} dim {manifest[m]['dim']} ({manifest[m]['items_with_features']} items)"
            for m in MODALITIES
            if m in manifest
        )
        + f"; manifest {Path(out) / 'features.json'}"
    )
    return manifest
