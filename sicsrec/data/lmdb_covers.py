"""NineRec covers stored in an LMDB: pickled ``LMDB_Image`` records, read without trusting pickle.

A pickle can run any code when loaded, so records are read through a restricted unpickler that
admits the expected record type (``LMDB_Image`` with ``channels``, ``size``, ``image`` bytes and an
``id``) and numpy's array reconstruction, and refuses everything else with a clear error.
Keys are the items' original ids (UTF-8).
"""

from __future__ import annotations

import io
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np

from sicsrec.errors import DataError

PREFIX = "lmdb:"
NUMPY_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class LMDBImage:
    """Stand-in for NineRec's ``LMDB_Image``: only its data, none of its code."""

    channels: int
    size: tuple
    image: bytes

    def array(self) -> np.ndarray:
        h, w = self.size
        return np.frombuffer(self.image, dtype=np.uint8).reshape(h, w, self.channels)


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name == "LMDB_Image":
            return LMDBImage
        if (module, name) in NUMPY_ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: only LMDB_Image records and numpy "
            "arrays are read from cover databases"
        )


def cover_ref(db: Path, item: str) -> str:
    return f"{PREFIX}{db}::{item}"


@lru_cache(maxsize=4)
def _env(path: str):
    import lmdb

    return lmdb.open(path, readonly=True, lock=False, readahead=False, meminit=False, subdir=True)


def read_lmdb_cover(ref: str):
    """PIL image for a ``lmdb:<db>::<item>`` reference; None when the item has no record.
    A record that is not an image record is a DataError naming the database and key."""
    from PIL import Image

    db, _, item = ref[len(PREFIX) :].partition("::")
    with _env(db).begin() as txn:
        raw = txn.get(item.encode("utf-8"))
    if raw is None:
        return None
    try:
        record = RestrictedUnpickler(io.BytesIO(raw)).load()
        if not isinstance(record, LMDBImage):
            raise pickle.UnpicklingError(f"record is a {type(record).__name__}, not an LMDB_Image")
        return Image.fromarray(record.array()).convert("RGB")
    except (pickle.UnpicklingError, AttributeError, ValueError, TypeError, EOFError) as err:
        raise DataError(db, f"cover record {item!r} is unreadable: {err}") from None
