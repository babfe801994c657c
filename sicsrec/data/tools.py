"""The ``sicsrec data`` subcommands."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sicsrec.data import generate as gen
from sicsrec.data.prepare import format_stats, prepare
from sicsrec.io import cache_root, write_json_atomic


def generate(
    out: str,
    users: int = 2000,
    items: int = 300,
    seed: int = 0,
    name: str = "Gen",
    id_signal: float = 0.5,
    text_signal: float = 0.25,
    image_signal: float = 0.15,
    covers: Literal["signal", "noise", "none"] = "signal",
) -> None:
    """Write a generated NineRec-layout dataset with planted signals (see sicsrec.data.generate).

    Args:
        out: folder to write.
        users: number of users.
        items: number of items.
        seed: random seed.
        name: file name prefix (``<name>_item.csv`` …).
        id_signal: share of transitions to an item's fixed successors (IDs only).
        text_signal: share of transitions following the category cycle (in titles).
        image_signal: share of transitions following the colour cycle (in covers).
        covers: ``signal`` (colour attribute), ``noise`` (unrelated colours) or ``none``.
    """
    folder = gen.generate(
        out,
        users=users,
        items=items,
        seed=seed,
        name=name,
        id_signal=id_signal,
        text_signal=text_signal,
        image_signal=image_signal,
        covers=covers,
    )
    print(f"generated {users} users × {items} items in {folder}")


def prepare_dataset(
    root: str,
    min_seq_len: int = 3,
    drop_consecutive_duplicates: bool = False,
    text_column: str = "en",
    cache_dir: str | None = None,
) -> None:
    """Prepare (remap ids, filter, cache) a dataset folder and print its statistics.

    Args:
        root: dataset folder.
        min_seq_len: users with fewer items are dropped (and counted).
        drop_consecutive_duplicates: collapse repeated consecutive interactions (counted).
        text_column: title language that later steps read (``en`` or ``zh``).
        cache_dir: cache folder (default ``$SICSREC_CACHE`` or ``~/.cache/sicsrec``).
    """
    data = prepare(root, None, min_seq_len, drop_consecutive_duplicates, cache_dir)
    empty = sum(1 for t in data.titles_in(text_column) if not t)
    print(format_stats(data))
    print(f"  empty {text_column} titles: {empty}")
    out = cache_root(cache_dir) / "prepared" / f"{Path(root).name}-{data.key[:16]}.stats.json"
    write_json_atomic(out, {**data.stats, f"empty_{text_column}_titles": empty})
    print(f"statistics written to {out}")


def stats(root: str, min_seq_len: int = 3, cache_dir: str | None = None) -> None:
    """Print a dataset's statistics (prepares it first if needed).

    Args:
        root: dataset folder.
        min_seq_len: as in ``prepare``.
        cache_dir: cache folder.
    """
    print(format_stats(prepare(root, None, min_seq_len, False, cache_dir)))
