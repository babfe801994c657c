"""Raw dataset → prepared dataset: remapped ids (0 = padding), filtered users, statistics; cached.

The cache lives under the cache folder (``$SICSREC_CACHE``), keyed by the source files'
contents and the preparation options, so it is reused until either changes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sicsrec.data.formats import RawDataset, Reader, detect_reader
from sicsrec.errors import ConfigError, DataError
from sicsrec.io import atomic_path, cache_root, hash_files

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass
class PreparedData:
    """Sequences of internal item ids (1..num_items) with the maps back to original ids."""

    name: str
    key: str
    item_ids: list[str]  # item_ids[i - 1] is the original id of internal item i
    user_ids: list[str]
    offsets: np.ndarray  # user u's items are items[offsets[u]:offsets[u + 1]]
    items: np.ndarray
    titles: dict[str, list[str]]  # per language, aligned with item_ids
    images: list[str | None] | None
    stats: dict

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    def titles_in(self, column: str) -> list[str]:
        """The titles of one language (``text_column``); a clear error if the dataset lacks it."""
        if column not in self.titles:
            raise DataError(self.name, f"text_column {column!r} not among this dataset's titles {list(self.titles)}")
        return self.titles[column]

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def cold_start_items(self, share: float, seed: int = 0) -> np.ndarray:
        """The cold-start protocol's held-out items (internal ids, sorted): ``share`` of the items
        that occur in some user's training part (all but the last two items), drawn uniformly at
        random with ``seed``. Every step deletes them from the training parts (``without_items``),
        so training never sees them; validation and test rows keep them."""
        if not 0.0 <= share < 1.0:
            raise ConfigError(f"cold_items is {share}: expected a share of the items in [0, 1)")
        if share == 0.0:
            return np.zeros(0, dtype=self.items.dtype)
        occurring = np.unique(np.concatenate([self.sequence(u)[:-2] for u in range(self.num_users)]))
        chosen = np.random.default_rng(seed).choice(occurring, int(round(share * len(occurring))), replace=False)
        return np.sort(chosen)

    def save(self, path: Path) -> None:
        meta = {k: getattr(self, k) for k in ("name", "key", "item_ids", "user_ids", "titles", "images", "stats")}
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, offsets=self.offsets, items=self.items, meta=np.array(json.dumps(meta)))

    @classmethod
    def load(cls, path: Path) -> PreparedData:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(offsets=z["offsets"], items=z["items"], **meta)
        except Exception as err:
            raise DataError(
                path, f"prepared-data cache is unreadable ({err})", hint="delete it and run again"
            ) from None


def without_items(parts: list[np.ndarray], items: np.ndarray) -> list[np.ndarray]:
    """``parts`` (training parts) with every occurrence of ``items`` deleted (order kept)."""
    if len(items) == 0:
        return parts
    return [part[~np.isin(part, items)] for part in parts]


def build(raw: RawDataset, key: str, min_seq_len: int = 3, drop_consecutive_duplicates: bool = False) -> PreparedData:
    """Remap ids, drop users too short to split, count every drop."""
    index = {item: i + 1 for i, item in enumerate(raw.item_ids)}
    users, seqs = [], []
    dropped_short = duplicates = 0
    for user, seq in zip(raw.user_ids, raw.sequences):
        ids = [index[i] for i in seq]
        if drop_consecutive_duplicates:
            kept = [x for k, x in enumerate(ids) if k == 0 or x != ids[k - 1]]
            duplicates += len(ids) - len(kept)
            ids = kept
        if len(ids) < min_seq_len:
            dropped_short += 1
            continue
        users.append(user)
        seqs.append(np.asarray(ids, dtype=np.int64))
    if not seqs:
        raise DataError(raw.sources[0], f"no user has at least {min_seq_len} items", hint="lower data.min_seq_len")
    lengths = np.array([len(s) for s in seqs])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate(seqs)
    n_items = len(raw.item_ids)
    seen = np.zeros(n_items + 1, dtype=bool)
    seen[flat] = True
    stats = {
        "users": len(users),
        "items": n_items,
        "interactions": int(flat.size),
        "avg_length": round(float(lengths.mean()), 3),
        "median_length": float(np.median(lengths)),
        "min_length": int(lengths.min()),
        "max_length": int(lengths.max()),
        "density": round(float(flat.size) / (len(users) * n_items), 6),
        "items_never_seen": int(n_items - seen[1:].sum()),
        "dropped_users_too_short": dropped_short,
        "dropped_consecutive_duplicates": duplicates,
        "covers": sum(p is not None for p in raw.images) if raw.images else 0,
        **raw.counts,
    }
    return PreparedData(
        raw.name,
        key,
        list(raw.item_ids),
        users,
        offsets,
        flat,
        {k: list(v) for k, v in raw.titles.items()},
        raw.images,
        stats,
    )


def reader_spec(reader: Reader) -> dict:
    return {"class": type(reader).__name__, **vars(reader)}


def prepare(
    root: str | Path,
    reader: Reader | None = None,
    min_seq_len: int = 3,
    drop_consecutive_duplicates: bool = False,
    cache_dir: str | Path | None = None,
) -> PreparedData:
    """Read and prepare ``root`` once; later calls with unchanged files and options load the cache."""
    root = Path(root)
    reader = reader or detect_reader(root)
    if not root.is_dir() and not getattr(reader, "hub_name", None):
        raise DataError(root, "dataset folder not found", hint="set data.root to a dataset folder")
    options = {
        "reader": reader_spec(reader),
        "min_seq_len": min_seq_len,
        "drop_consecutive_duplicates": drop_consecutive_duplicates,
        "version": FORMAT_VERSION,
        "root": str(root.resolve()),
        "covers": cover_listing(root),
    }
    sources = source_files(root, reader)
    key = hash_files(sources, extra=options)
    path = cache_root(cache_dir) / "prepared" / f"{root.name}-{key[:16]}.npz"
    if path.is_file():
        try:
            data = PreparedData.load(path)
            if data.key == key:
                return data
            log.warning("prepared cache %s has another key; rebuilding", path)
        except DataError as err:
            log.warning("%s; rebuilding it", err)
    raw = reader.read(root)
    data = build(raw, key, min_seq_len, drop_consecutive_duplicates)
    data.save(path)
    log.info("prepared %s → %s", root, path)
    return data


def cover_listing(root: Path) -> list:
    """Names, sizes and times of cover files: the prepared data records their paths."""
    listing = []
    for db in sorted(root.glob("*_cover.lmdb")):
        listing += [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(db.iterdir())]
    for folder in sorted(root.glob("*_cover")):
        for p in sorted(folder.iterdir()):
            st = p.stat()
            listing.append((p.name, st.st_size, st.st_mtime_ns))
    return listing


def source_files(root: Path, reader: Reader) -> list[Path]:
    """The files whose contents define the dataset (covers are keyed later, by the feature cache)."""
    from sicsrec.data.formats import CatalogueFormat, HFDatasetFormat, SequenceFormat

    if isinstance(reader, HFDatasetFormat):
        files = reader.source_files(root)
    elif isinstance(reader, SequenceFormat):
        files = [root / "sequential_data.txt", *root.glob("*_item.csv")]
    elif isinstance(reader, CatalogueFormat):
        files = [root / reader.interactions, root / reader.items]
    else:
        files = [*root.glob("*_item.csv"), *root.glob("*_pair.csv"), *root.glob("*_behaviour.tsv")]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DataError(missing[0], "file not found")
    return files


def format_stats(data: PreparedData) -> str:
    width = max(len(k) for k in data.stats)
    lines = [f"dataset {data.name} (key {data.key[:12]})"]
    lines += [f"  {k:<{width}}  {v:,}" if isinstance(v, int) else f"  {k:<{width}}  {v}" for k, v in data.stats.items()]
    return "\n".join(lines)
