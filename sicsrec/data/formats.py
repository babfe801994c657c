"""Readers: dataset files on disk → one in-memory :class:`RawDataset`.

Four layouts are understood (and generated data is written in the second):

* ``sequences`` — the preprocessed NineRec folders: ``sequential_data.txt`` (user id, then
  the user's items in time order) and ``<name>_item.csv`` (item id, Chinese, English; no header).
* ``ninerec`` — the NineRec release: ``X_item.csv``, ``X_pair.csv`` (user/item order detected)
  or ``X_behaviour.tsv``, and covers in ``X_cover/<item id>.jpg``.
* ``catalogue`` — a team's own files: interactions CSV/Parquet with configurable
  user/item/timestamp columns, and an item table with id, title(s) and an optional image path.
* ``HFDatasetFormat`` — the same two tables as a Hugging Face ``datasets`` dataset (saved with
  ``save_to_disk``, or a hub name), read with the ``datasets`` library.

Every problem with the files is a :class:`DataError` naming file, line and problem.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sicsrec.errors import DataError

csv.field_size_limit(1 << 24)

TITLE_COLUMNS = ("zh", "en")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass
class RawDataset:
    """A dataset as read: original (string) ids, titles per language, optional cover paths."""

    name: str
    item_ids: list[str]
    titles: dict[str, list[str]]
    images: list[str | None] | None
    user_ids: list[str]
    sequences: list[list[str]]
    sources: list[Path]
    counts: dict[str, int] = field(default_factory=dict)


def read_text(path: Path) -> str:
    """Read UTF-8 text; bad bytes are reported with their line, not a codec traceback."""
    if not path.is_file():
        raise DataError(path, "file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(
            path, f"bytes that are not UTF-8 at byte {err.start}", line, "re-save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(path, "file is empty")
    return text


def csv_records(path: Path, delimiter: str = ","):
    """Yield ``(line, fields)`` for each non-blank CSV record; ``line`` is where it starts."""
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter, strict=True)
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if fields and any(f.strip() for f in fields):
                yield line, fields
    except csv.Error as err:
        raise DataError(
            path, f"malformed CSV: {err}", reader.line_num + 1, "check the quoting of this record"
        ) from None


def read_item_table(
    path: Path, n_columns: int, id_kind: Literal["int", "str"]
) -> tuple[list[str], dict[str, list[str]]]:
    """Read a headerless ``id, zh, en`` item file."""
    ids: list[str] = []
    titles: dict[str, list[str]] = {c: [] for c in TITLE_COLUMNS}
    seen: dict[str, int] = {}
    for line, fields in csv_records(path):
        if line == 1 and fields[0].strip().lower() in ("item_id", "id", "item"):
            continue  # a header row
        if len(fields) != n_columns:
            raise DataError(
                path,
                f"expected {n_columns} columns (item id, Chinese title, English title), found {len(fields)}",
                line,
                "quote titles that contain commas",
            )
        item = fields[0].strip()
        if not item or (id_kind == "int" and not item.isdigit()):
            raise DataError(path, f"item id {item!r} is not a non-negative integer", line)
        if item in seen:
            raise DataError(path, f"duplicate item id {item!r} (first on line {seen[item]})", line)
        seen[item] = line
        ids.append(item)
        titles["zh"].append(fields[1].strip())
        titles["en"].append(fields[2].strip())
    if not ids:
        raise DataError(path, "no items in the item file")
    return ids, titles


def find_one(root: Path, pattern: str, what: str) -> Path:
    matches = sorted(root.glob(pattern))
    if not matches:
        raise DataError(root, f"no {what} ({pattern}) in this folder")
    if len(matches) > 1:
        raise DataError(
            root, f"several {what} files: {', '.join(m.name for m in matches)}", hint="keep one dataset per folder"
        )
    return matches[0]


def check_items_known(path: Path, line: int, items: list[str], known: dict[str, int], item_file: Path) -> None:
    for item in items:
        if item not in known:
            raise DataError(path, f"item {item!r} is not in the item file {item_file.name}", line)


class SequenceFormat:
    """``sequential_data.txt`` + ``<name>_item.csv`` (the layout of ``../shared/data/ninerec``)."""

    def read(self, root: Path) -> RawDataset:
        seq_path = root / "sequential_data.txt"
        if not seq_path.is_file():
            raise DataError(seq_path, "file not found")
        item_path = find_one(root, "*_item.csv", "item file")
        item_ids, titles = read_item_table(item_path, 3, "int")
        known = {item: i for i, item in enumerate(item_ids)}
        users, sequences, empty = [], [], 0
        seen_users: dict[str, int] = {}
        for line, raw in enumerate(read_text(seq_path).splitlines(), start=1):
            tokens = raw.split()
            if not tokens:
                continue
            bad = next((t for t in tokens if not t.isdigit()), None)
            if bad is not None:
                raise DataError(seq_path, f"id {bad!r} is not a non-negative integer", line)
            user, items = tokens[0], tokens[1:]
            if user in seen_users:
                raise DataError(seq_path, f"user {user} appears twice (first on line {seen_users[user]})", line)
            seen_users[user] = line
            if not items:
                empty += 1
                continue
            check_items_known(seq_path, line, items, known, item_path)
            users.append(user)
            sequences.append(items)
        if not sequences:
            raise DataError(seq_path, "no user has any item")
        return RawDataset(
            root.name, item_ids, titles, None, users, sequences, [seq_path, item_path], {"users_without_items": empty}
        )


class NineRecFormat:
    """The NineRec release: ``X_item.csv``, ``X_pair.csv`` or ``X_behaviour.tsv``, ``X_cover/``.

    Args:
        pair_order: column order of ``X_pair.csv``. ``auto`` detects it from which column
            holds item ids; a file where both could be items must say it explicitly.
    """

    def __init__(self, pair_order: Literal["auto", "user_item", "item_user"] = "auto"):
        self.pair_order = pair_order

    def read(self, root: Path) -> RawDataset:
        item_path = find_one(root, "*_item.csv", "item file")
        name = item_path.name[: -len("_item.csv")]
        item_ids, titles = read_item_table(item_path, 3, "str")
        known = {item: i for i, item in enumerate(item_ids)}
        pair_path, behaviour_path = root / f"{name}_pair.csv", root / f"{name}_behaviour.tsv"
        if pair_path.is_file():
            users, sequences = self._read_pairs(pair_path, known, item_path)
            sources = [item_path, pair_path]
        elif behaviour_path.is_file():
            users, sequences = self._read_behaviour(behaviour_path, known, item_path)
            sources = [item_path, behaviour_path]
        else:
            raise DataError(root, f"neither {pair_path.name} nor {behaviour_path.name} found")
        cover_dir, cover_db = root / f"{name}_cover", root / f"{name}_cover.lmdb"
        images = None
        if cover_dir.is_dir():
            files = {p.stem: p for p in cover_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
            images = [str(files[i]) if i in files else None for i in item_ids]
        elif cover_db.is_dir():
            from sicsrec.data.lmdb_covers import cover_ref

            images = [cover_ref(cover_db.resolve(), i) for i in item_ids]
        return RawDataset(name, item_ids, titles, images, users, sequences, sources)

    def _read_pairs(self, path: Path, known: dict[str, int], item_path: Path):
        rows = []
        for line, fields in csv_records(path):
            if len(fields) != 3:
                raise DataError(
                    path, f"expected 3 columns (user, item, timestamp in some order), found {len(fields)}", line
                )
            rows.append((line, *(f.strip() for f in fields)))
        order = self.pair_order
        if order == "auto":
            first = sum(r[1] in known for r in rows)
            second = sum(r[2] in known for r in rows)
            if first == second or max(first, second) < 0.5 * len(rows):
                why = "both" if first == len(rows) else "neither"
                raise DataError(
                    path,
                    f"cannot tell which column holds items: {why} of the first two columns match the item file",
                    hint="set pair_order: user_item or item_user",
                )
            # The column that matches (nearly) every row holds items; a row where it does not
            # is reported below with its line.
            order = "item_user" if first > second else "user_item"
        user_col, item_col = (1, 2) if order == "user_item" else (2, 1)
        by_user: dict[str, list[tuple[float, int, str]]] = {}
        for k, row in enumerate(rows):
            line, user, item, stamp = row[0], row[user_col], row[item_col], row[3]
            if item not in known:
                raise DataError(path, f"item {item!r} is not in the item file {item_path.name}", line)
            try:
                t = float(stamp)
            except ValueError:
                raise DataError(path, f"timestamp {stamp!r} is not a number", line) from None
            by_user.setdefault(user, []).append((t, k, item))
        users = list(by_user)
        sequences = [[item for _, _, item in sorted(by_user[u])] for u in users]  # stable by file order
        return users, sequences

    def _read_behaviour(self, path: Path, known: dict[str, int], item_path: Path):
        users, sequences = [], []
        for line, raw in enumerate(read_text(path).splitlines(), start=1):
            if not raw.strip():
                continue
            user, _, rest = raw.partition("\t")
            items = rest.split()
            if not items:
                continue
            check_items_known(path, line, items, known, item_path)
            users.append(user.strip())
            sequences.append(items)
        return users, sequences


class CatalogueFormat:
    """A team's own catalogue: an interactions table and an item table (CSV or Parquet).

    Interactions are sorted by user, then timestamp, stably: ties keep file order.
    Image paths are relative to the item table's folder; an empty cell is an item without one.
    A title may join several columns (``title_columns: {en: [title, genres]}``: "Heat (1995). Action").
    """

    def __init__(
        self,
        interactions: str = "interactions.csv",
        items: str = "items.csv",
        user_column: str = "user_id",
        item_column: str = "item_id",
        time_column: str | None = "timestamp",
        item_id_column: str = "item_id",
        title_columns: dict[str, str | list[str]] | None = None,
        image_column: str | None = None,
    ):
        self.interactions, self.items = interactions, items
        self.user_column, self.item_column, self.time_column = user_column, item_column, time_column
        self.item_id_column = item_id_column
        self.title_columns = title_columns or {"en": "title"}
        self.image_column = image_column

    @staticmethod
    def _table(path: Path, columns: list[str]):
        import pandas as pd

        if not path.is_file():
            raise DataError(path, "file not found")
        try:
            if path.suffix == ".parquet":
                frame = pd.read_parquet(path)
            else:
                read_text(path)  # encoding and emptiness, reported with a line
                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except DataError:
            raise
        except Exception as err:  # pandas/pyarrow parse errors
            raise DataError(path, f"cannot parse table: {err}") from None
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(
                path,
                f"missing column(s) {missing}; found {list(frame.columns)}",
                1,
                "set the *_column options to this file's names",
            )
        return frame

    def read(self, root: Path) -> RawDataset:
        item_path, inter_path = root / self.items, root / self.interactions
        items = self._table(item_path, self.item_columns())
        inter = self._table(inter_path, self.interaction_columns())
        images = self._cover_paths(items, item_path) if self.image_column else None
        return self.catalogue(root.name, items, item_path, images, inter, inter_path, first_line=2)

    def _cover_paths(self, items, item_path: Path) -> list[str | None]:
        """Each item's cover, relative to the item table's folder; an empty cell is an item without
        one (masked later, and counted). A path to no file is an error with its line: a typo or a
        folder moved must not turn a catalogue's pictures silently into missing ones."""
        paths = []
        for row, cell in enumerate(items[self.image_column].astype(str).str.strip()):
            path = item_path.parent / cell if cell else None
            if path is not None and not path.is_file():
                raise DataError(
                    item_path,
                    f"cover {cell!r} (column {self.image_column}) is not a file; leave the cell empty for an item "
                    "without a picture",
                    row + 2,
                )
            paths.append(None if path is None else str(path))
        return paths

    def item_columns(self) -> list[str]:
        return [self.item_id_column, *self.text_columns()] + ([self.image_column] if self.image_column else [])

    def text_columns(self) -> list[str]:
        """Every column a title is made of (``title_columns: {en: [title, genres]}`` joins two)."""
        columns = [[c] if isinstance(c, str) else c for c in self.title_columns.values()]
        return list(dict.fromkeys(c for cs in columns for c in cs))

    def interaction_columns(self) -> list[str]:
        return [self.user_column, self.item_column] + ([self.time_column] if self.time_column else [])

    def catalogue(
        self, name: str, items, item_path, images: list[str | None] | None, inter, inter_path, first_line: int
    ) -> RawDataset:
        """Item and interaction tables (pandas) → a RawDataset; a problem names its table and line
        (``first_line``: the line of the first row — 2 under a CSV header, 0 for row indices)."""
        item_ids = items[self.item_id_column].astype(str).str.strip().tolist()
        seen: dict[str, int] = {}
        for row, item in enumerate(item_ids):
            if item in seen:
                raise DataError(item_path, f"duplicate item id {item!r} (first on line {seen[item]})", row + first_line)
            seen[item] = row + first_line
        titles = {}
        for lang, columns in self.title_columns.items():
            parts = [items[c].astype(str) for c in ([columns] if isinstance(columns, str) else columns)]
            titles[lang] = [". ".join(p for p in row if p) for row in zip(*parts)]
        inter = inter.assign(_line=range(first_line, len(inter) + first_line))
        inter[self.item_column] = inter[self.item_column].astype(str).str.strip()
        unknown = ~inter[self.item_column].isin(seen)
        if unknown.any():
            first = inter[unknown].iloc[0]
            raise DataError(
                inter_path,
                f"item {first[self.item_column]!r} is not in the item table {Path(str(item_path)).name}",
                int(first["_line"]),
            )
        keys = [self.user_column]
        if self.time_column:
            import pandas as pd

            times = pd.to_numeric(inter[self.time_column], errors="coerce")
            if times.isna().any():
                bad = inter[times.isna()].iloc[0]
                raise DataError(inter_path, f"timestamp {bad[self.time_column]!r} is not a number", int(bad["_line"]))
            inter = inter.assign(_time=times)
            keys.append("_time")
        inter = inter.sort_values(keys, kind="stable")
        users, sequences = [], []
        for user, group in inter.groupby(self.user_column, sort=False):
            users.append(str(user))
            sequences.append(group[self.item_column].tolist())
        return RawDataset(
            name, item_ids, titles, images, users, sequences, [Path(str(item_path)), Path(str(inter_path))]
        )


class HFDatasetFormat(CatalogueFormat):
    """A catalogue kept as a Hugging Face ``datasets`` dataset, read with the ``datasets`` library.

    ``root`` holds what ``save_to_disk`` wrote: a ``DatasetDict`` whose ``interactions`` and
    ``items`` splits are the two tables, or a single ``Dataset`` of interactions whose rows also
    carry the item fields (one item table is made from them; an item whose fields differ between
    rows is an error). With ``hub_name`` the same is loaded from the Hugging Face hub instead (where
    it is reachable; ``root`` then only names the dataset). Columns are named as in ``catalogue``.
    The image column holds a path (relative to ``root``) or an ``Image`` feature; image bytes are
    written once to ``<cache>/covers/<sha256>``. A problem names the table and the row index.
    """

    def __init__(
        self,
        interactions: str = "interactions",
        items: str = "items",
        user_column: str = "user_id",
        item_column: str = "item_id",
        time_column: str | None = "timestamp",
        item_id_column: str = "item_id",
        title_columns: dict[str, str | list[str]] | None = None,
        image_column: str | None = None,
        hub_name: str | None = None,
        revision: str | None = None,
    ):
        super().__init__(
            interactions, items, user_column, item_column, time_column, item_id_column, title_columns, image_column
        )
        self.hub_name, self.revision = hub_name, revision

    def _load(self, root: Path):
        import datasets

        if self.hub_name:
            try:
                return datasets.load_dataset(self.hub_name, revision=self.revision)
            except Exception as err:  # offline, unknown name, no access: one line
                raise DataError(
                    self.hub_name,
                    f"cannot load this hub dataset ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''})",
                ) from None
        if not root.is_dir():
            raise DataError(root, "dataset folder not found", hint="set data.root to a folder written by save_to_disk")
        try:
            return datasets.load_from_disk(str(root))
        except Exception as err:
            raise DataError(root, f"not a dataset written by save_to_disk ({type(err).__name__})") from None

    def source_files(self, root: Path) -> list[Path]:
        """The files whose contents define the dataset: everything ``save_to_disk`` wrote (or the
        hub dataset's cached files)."""
        if self.hub_name:
            loaded = self._load(root)
            parts = loaded.values() if hasattr(loaded, "values") else [loaded]
            return sorted({Path(f["filename"]) for part in parts for f in part.cache_files})
        if not root.is_dir():
            raise DataError(root, "dataset folder not found", hint="set data.root to a folder written by save_to_disk")
        return sorted(p for p in root.rglob("*") if p.is_file())

    def _frame(self, dataset, where: str, columns: list[str]):
        """The columns of one table as a pandas frame; a missing column or a column of the wrong
        type is named with the table."""
        import datasets

        missing = [c for c in columns if c not in dataset.column_names]
        if missing:
            raise DataError(
                where,
                f"missing column(s) {missing}; found {dataset.column_names}",
                hint="set the *_column options to this dataset's names",
            )
        for column in columns:
            kind = dataset.features[column]
            if column == self.image_column:
                ok = isinstance(kind, datasets.Image) or (
                    isinstance(kind, datasets.Value) and kind.dtype in ("string", "large_string")
                )
                expected = "an Image feature or a string path"
            elif column == self.time_column:
                ok = isinstance(kind, datasets.Value) and not kind.dtype.startswith(("bool", "binary", "timestamp"))
                expected = "numbers (or numeric strings)"
            elif column in self.text_columns():
                ok, expected = isinstance(kind, datasets.Value) and "string" in kind.dtype, "strings"
            else:  # user and item ids
                ok = isinstance(kind, datasets.Value) and kind.dtype.startswith(
                    ("int", "uint", "string", "large_string")
                )
                expected = "strings or integers"
            if not ok:
                raise DataError(where, f"column {column!r} holds {kind}, expected {expected}")
        if self.image_column in columns:
            dataset = (
                dataset.cast_column(self.image_column, datasets.Image(decode=False))
                if isinstance(dataset.features[self.image_column], datasets.Image)
                else dataset
            )
        return dataset.select_columns(columns).to_pandas()

    def _covers(self, root: Path, values) -> list[str | None]:
        """Image references of the item table: paths (relative to ``root``) as they are; bytes
        written once, content-addressed, to the cache."""
        import hashlib

        from sicsrec.io import atomic_path, cache_root

        out: list[str | None] = []
        for value in values:
            if isinstance(value, dict):
                data, path = value.get("bytes"), value.get("path")
                if data:
                    target = cache_root() / "covers" / hashlib.sha256(data).hexdigest()
                    if not target.is_file():
                        with atomic_path(target) as tmp:
                            tmp.write_bytes(data)
                    out.append(str(target))
                    continue
                value = path
            out.append(str(root / value) if value else None)
        return out

    def read(self, root: Path) -> RawDataset:
        import datasets

        loaded = self._load(root)
        where = self.hub_name or str(root)
        name = self.hub_name.rsplit("/", 1)[-1] if self.hub_name else root.name
        if isinstance(loaded, datasets.DatasetDict):
            for split in (self.interactions, self.items):
                if split not in loaded:
                    raise DataError(
                        where,
                        f"no {split!r} split; found {list(loaded)}",
                        hint="set the reader's interactions and items options to the split names",
                    )
            inter_where, item_where = f"{where}[{self.interactions}]", f"{where}[{self.items}]"
            items = self._frame(loaded[self.items], item_where, self.item_columns())
            inter = self._frame(loaded[self.interactions], inter_where, self.interaction_columns())
        else:  # one table: interactions that carry their item's fields
            inter_where = item_where = where
            item_fields = [c for c in self.item_columns() if c != self.item_id_column]
            rows = self._frame(loaded, where, self.interaction_columns() + item_fields)
            items = self._items_of(rows, where, item_fields)
            inter = rows[self.interaction_columns()]
        images = self._covers(root, items[self.image_column].tolist()) if self.image_column else None
        return self.catalogue(name, items, item_where, images, inter, inter_where, first_line=0)

    def _items_of(self, rows, where: str, fields: list[str]):
        """The item table of a one-table dataset: each item's fields, which must agree between its rows."""
        import pandas as pd

        ids = rows[self.item_column].astype(str).str.strip()
        first = {}
        for row, (item, values) in enumerate(zip(ids, rows[fields].itertuples(index=False))):
            values = tuple(repr(v) for v in values)  # images are dicts
            if item not in first:
                first[item] = (row, values)
            elif first[item][1] != values:
                raise DataError(
                    where,
                    f"item {item!r} has other {fields} than in row {first[item][0]}",
                    row,
                    hint="give items their own split",
                )
        keep = [row for row, _ in first.values()]
        items = rows.iloc[keep][fields].reset_index(drop=True)
        return pd.concat([pd.Series(list(first), name=self.item_id_column), items], axis=1)


Reader = SequenceFormat | NineRecFormat | CatalogueFormat | HFDatasetFormat


IMAGE_COLUMNS = ("cover", "image", "image_path", "poster")  # an item table's picture column, when detected


def _header(path: Path) -> list[str]:
    """A CSV's column names (first line); a Parquet file's schema names."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return next(csv.reader(f), [])


def detect_reader(root: Path) -> Reader:
    """Pick the reader from the files present in ``root``."""
    if not root.is_dir():
        raise DataError(root, "dataset folder not found", hint="set data.root to a dataset folder")
    if (root / "sequential_data.txt").is_file():
        return SequenceFormat()
    if list(root.glob("*_item.csv")) and (list(root.glob("*_pair.csv")) or list(root.glob("*_behaviour.tsv"))):
        return NineRecFormat()
    if list(root.glob("interactions.*")) and list(root.glob("items.*")):
        inter = sorted(root.glob("interactions.*"))[0].name
        items = sorted(root.glob("items.*"))[0]
        image = next((c for c in IMAGE_COLUMNS if c in _header(items)), None)
        return CatalogueFormat(interactions=inter, items=items.name, image_column=image)
    raise DataError(
        root, "no known dataset layout here (sequential_data.txt, X_item.csv + X_pair.csv, or interactions.* + items.*)"
    )


def load_cover(path: str | None):
    """Open a cover; None for a missing or unreadable file (the caller counts and masks it)."""
    if path is None:
        return None
    from PIL import Image, UnidentifiedImageError

    from sicsrec.data.lmdb_covers import PREFIX, read_lmdb_cover

    if path.startswith(PREFIX):
        return read_lmdb_cover(path)
    try:
        with Image.open(path) as img:
            img.draft("RGB", (512, 512))  # huge JPEGs decode at reduced size
            if img.mode in ("RGBA", "LA", "P"):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)  # transparent → white, not black
            return img.convert("RGB")  # also grayscale, CMYK, 16-bit
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
