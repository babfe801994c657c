"""Cached item features: run an encoder once over every item, reuse the result until the
encoder, its weights, its settings or the item table change.

A feature file is a float32 ``.npy`` of shape (num_items + 1, dim) whose row ``i`` belongs to
internal item ``i`` (row 0, padding, is zeros), written through a memory map under a temporary
name and renamed (one copy in RAM at most, never a half-written file that a later run trusts),
with a ``.mask.npy`` (False where an item has no usable cover) and a ``.json`` describing it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sicsrec.io import atomic_path, cache_root, write_json_atomic

log = logging.getLogger(__name__)
FEATURE_VERSION = 1
MODALITIES = ("text", "image")  # the content an item can carry, in the order features are listed


@dataclass
class ItemFeatures:
    values: np.ndarray  # (num_items + 1, dim), memory-mapped
    mask: np.ndarray  # (num_items + 1,) bool
    meta: dict
    path: Path

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def text_table_digest(titles: list[str]) -> str:
    return _digest(titles)


def image_table_digest(paths: list[str | None]) -> str:
    """Paths with size and modification time (hashing every cover's bytes would cost a full read)."""
    from sicsrec.data.lmdb_covers import PREFIX

    entries = []
    databases = set()
    for p in paths:
        if p is not None and p.startswith(PREFIX):
            databases.add(p[len(PREFIX) :].partition("::")[0])
            entries.append(p)
        elif p is None or not os.path.exists(p):
            entries.append(None)
        else:
            st = os.stat(p)
            entries.append((p, st.st_size, st.st_mtime_ns))
    for db in sorted(databases):
        entries += [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(Path(db).iterdir())]
    return _digest(entries)


def feature_key(identity: dict, weights: str, table: str) -> str:
    return _digest({"identity": identity, "weights": weights, "table": table, "version": FEATURE_VERSION})


def load_features(path: Path) -> ItemFeatures | None:
    """The cached features at ``path``, or None if absent or damaged (then they are recomputed)."""
    meta_path, mask_path = path.with_suffix(".json"), path.with_suffix(".mask.npy")
    if not (path.is_file() and meta_path.is_file() and mask_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        values = np.load(path, mmap_mode="r")
        mask = np.load(mask_path)
        if values.shape != (meta["rows"], meta["dim"]) or mask.shape != (meta["rows"],):
            raise ValueError(f"shape {values.shape} does not match its description")
    except (ValueError, OSError, KeyError, json.JSONDecodeError) as err:
        log.warning("feature cache %s is damaged (%s): recomputing", path, err)
        return None
    return ItemFeatures(values, mask, meta, path)


def cached_features(name: str, modality: str, key: str, cache_dir: str | None = None) -> Path:
    return cache_root(cache_dir) / "features" / f"{name}-{modality}-{key[:20]}.npy"


@torch.inference_mode()
def compute_features(
    path: Path, rows: int, dim: int, batches, encode, meta: dict, progress: bool = True
) -> ItemFeatures:
    """Fill a (rows, dim) feature file batch by batch. ``batches`` yields (row indices, inputs)
    and ``encode(inputs)`` returns a (len, dim) tensor; rows not yielded stay masked."""
    from tqdm.auto import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros(rows, dtype=bool)
    with atomic_path(path) as tmp:
        values = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, dim))
        with tqdm(total=rows - 1, desc=f"{meta['modality']} features", unit="item", disable=not progress) as bar:
            for index, inputs in batches:
                values[index] = encode(inputs).float().cpu().numpy()
                mask[index] = True
                bar.update(len(index))
        values.flush()
        del values
        with atomic_path(path.with_suffix(".mask.npy")) as mtmp:
            with open(mtmp, "wb") as f:
                np.save(f, mask)
        write_json_atomic(
            path.with_suffix(".json"), {**meta, "rows": rows, "dim": dim, "items_with_features": int(mask.sum())}
        )
    return load_features(path)
