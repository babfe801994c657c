"""Serving a trained model: the next items for any history in the catalogue's own ids
(``sicsrec recommend``) and the vectors an approximate-nearest-neighbour index needs
(``sicsrec export``).

A :class:`Recommender` is built from a run folder (its ``config.yaml``: the ``model`` and ``data``
sections) or any config file, and a checkpoint, and ranks exactly as ``sicsrec predict``
does: the same model input (a history's last ``max_len`` items), the same scoring, the same
exclusion of the history's items. Ids the catalogue does not know are reported and skipped, never
mapped to padding. Items of the catalogue that training never saw are known ids: the model ranks
them through whatever it has for them (content, in the content and stage-2 models).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sicsrec.errors import ConfigError, DataError
from sicsrec.io import atomic_path, write_json_atomic

MANIFEST = "manifest.json"


def run_files(run: str | Path, ckpt_path: str | Path | None) -> tuple[Path, Path]:
    """The config and checkpoint of a run: ``run`` is a run folder (its ``config.yaml``; by default
    its one ``checkpoints/best*.ckpt``) or a config file (then ``ckpt_path`` is needed)."""
    run = Path(run)
    config = run / "config.yaml" if run.is_dir() else run
    if not config.is_file():
        raise ConfigError(f"--run {run}: neither a run folder with a config.yaml nor a config file")
    if ckpt_path is not None:
        return config, Path(ckpt_path)
    best = sorted((run / "checkpoints").glob("best*.ckpt")) if run.is_dir() else []
    if len(best) != 1:
        found = f"{len(best)} best*.ckpt files in {run / 'checkpoints'}" if run.is_dir() else "a config file"
        raise ConfigError(f"--run {run}: {found}; say which checkpoint with --ckpt_path")
    return config, best[0]


def read_config(config: str | Path) -> dict:
    """A config file's ``model`` and ``data`` sections (the rest — trainer, loggers, ``ckpt_path``
    — is not needed to serve)."""
    import yaml

    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"--config {config}: no such file")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {config}: not YAML ({str(err).splitlines()[0]})") from None
    missing = [key for key in ("model", "data") if key not in values]
    if missing:
        raise ConfigError(f"--config {config}: no {' or '.join(missing)} section (give the run's config.yaml)")
    return {"model": values["model"], "data": values["data"]}


def build_from_config(values: dict, config: str | Path):
    """The LightningModule and DataModule that ``values`` (``read_config`` of ``config``) describe."""
    from jsonargparse import ArgumentParser
    from lightning import LightningDataModule, LightningModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningModule, "model", required=True)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    try:
        built = parser.instantiate_classes(parser.parse_object(values))
    except Exception as err:  # jsonargparse reports every problem as one of a few exception types
        raise ConfigError(f"--config {config}: {str(err).splitlines()[0]}") from None
    return built.model, built.data


@dataclass
class Recommendation:
    """The ranked next items for one history; ``unknown`` lists the history's ids the catalogue lacks."""

    items: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    vector: list[float] | None = None


def load_model(run: str | Path, ckpt_path: str | Path | None = None, new_items: bool = True):
    """(model, datamodule, checkpoint path) of a run folder (or config file), weights loaded with
    the new-item rows fitted for them (``sicsrec fold-in``; read, never fitted here) and nothing
    bound to any histories yet: what a benchmark that scores its own splits starts from.
    ``new_items`` False: without those rows (what ``fold-in`` fits them from)."""
    from sicsrec.checkpoints import checked, read_new_items

    config, ckpt_path = run_files(run, ckpt_path)
    values = read_config(config)
    checkpoint = checked(ckpt_path, values["model"].get("class_path", ""), values["model"].setdefault("init_args", {}))
    model, datamodule = build_from_config(values, config)
    model.bind_features(datamodule)
    model.bind_data(datamodule.num_items, datamodule.max_len)
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    if new_items and hasattr(model, "new_item_rows"):
        model.new_item_rows = read_new_items(ckpt_path)
    return model.eval(), datamodule, ckpt_path


def fold_in(run: str, ckpt_path: str | None = None) -> None:
    """Fit the rows of never-seen items that the test inputs and the catalogue's sequences lead to
    (``new_item_fold_in``) and write them beside the checkpoint, once: ``test``, ``predict``,
    ``recommend`` and ``export`` read them. ``sicsrec fit`` of stage 2 already does this before its test.

    Args:
        run: a run folder (its ``config.yaml``) or a config file: the ``model`` and ``data`` sections are used.
        ckpt_path: the checkpoint to fit rows for; default the run folder's one ``checkpoints/best*.ckpt``.
    """
    from sicsrec.checkpoints import write_new_items

    model, datamodule, ckpt_path = load_model(run, ckpt_path, new_items=False)  # a stale file is replaced
    if not hasattr(model, "fold_in_splits"):
        raise ConfigError(f"{ckpt_path}: a {type(model).__name__} has no new-item rows to fit (stage 2 has)")
    rows = model.fold_in_splits(datamodule)
    if not rows:
        print("sicsrec fold-in: no never-seen item to fit (or new_item_fold_in off): nothing written", file=sys.stderr)
        return
    path = write_new_items(ckpt_path, rows)
    counts = ", ".join(f"{split} {len(items)}" for split, (items, _) in rows.items())
    print(f"new-item rows ({counts} items) written to {path}", file=sys.stderr)


class Recommender:
    """A trained model kept in memory with its catalogue: histories in, top-K items out."""

    def __init__(self, model, datamodule, checkpoint: str | Path | None = None):
        self.model, self.datamodule, self.checkpoint = model.eval(), datamodule, checkpoint
        self.data = datamodule.data
        self.index = {item: i + 1 for i, item in enumerate(self.data.item_ids)}
        with torch.no_grad():
            self.model.on_predict_epoch_start()  # no table cached from other weights
            # what predict ranks with: the catalogue's sequences (not the request's, so that a
            # history's answer does not depend on the others asked with it) and the rows fitted to them
            if hasattr(self.model, "bind_split"):  # models that rank new items from the histories
                self.model.bind_split("predict", datamodule)
            self.item_vectors = self.model.item_vectors().detach()
        self.scoring = self.model.scoring()

    @classmethod
    def load(cls, run: str | Path, ckpt_path: str | Path | None = None) -> Recommender:
        """The model of a run folder (or config file) with the weights of ``ckpt_path`` (default: the run's best)."""
        model, datamodule, ckpt_path = load_model(run, ckpt_path)
        return cls(model, datamodule, ckpt_path)

    def lookup(self, items: list) -> tuple[np.ndarray, list[str]]:
        """A history's internal ids (unknown ids left out) and the unknown ids."""
        known = [self.index[str(i)] for i in items if str(i) in self.index]
        return np.asarray(known, dtype=np.int64), [str(i) for i in items if str(i) not in self.index]

    @torch.no_grad()
    def recommend(
        self, histories: list[list], top_k: int = 10, exclude_seen: bool = True, with_vectors: bool = False
    ) -> list[Recommendation]:
        """The ``top_k`` next items for each history (original ids, oldest first), best first."""
        from sicsrec.nn.losses import item_scores
        from sicsrec.ranking import top_items

        looked_up = [self.lookup(history) for history in histories]
        out = [Recommendation(unknown=unknown) for _, unknown in looked_up]
        asked = [k for k, (known, _) in enumerate(looked_up) if len(known)]
        for batch in self.datamodule.history_loader([looked_up[k][0] for k in asked]):
            users = self.model.user_vectors(batch)
            scores = self.model.rescore(item_scores(users, self.item_vectors, *self.scoring), batch)
            top = top_items(scores, batch["history"], top_k, exclude_seen)
            for row, (key, (items, values)) in enumerate(zip(batch["user"].tolist(), top)):
                result = out[asked[key]]
                result.items = [self.data.item_ids[i - 1] for i in items]
                result.scores = [round(v, 6) for v in values]
                if with_vectors:
                    result.vector = users[row].float().tolist()
        return out

    def export(self, out: str | Path) -> Path:
        """The item vectors user vectors are scored against (``items.npy``, row i = ``item_ids[i]``)
        and ``manifest.json``: exact search over them with a user vector (``recommend
        --with_vectors``) gives ``recommend``'s ranking — but for the never-seen items that
        ``recommend`` scores from the catalogue's transitions instead (``new_item_chain``), which
        the manifest lists as ``rescored_items``."""
        out = Path(out)
        vectors = self.item_vectors[1:].float().cpu().numpy()
        with atomic_path(out / "items.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, vectors)
        kind, temperature = self.scoring
        manifest = {
            "vectors": "items.npy",
            "item_ids": list(self.data.item_ids),
            "count": int(vectors.shape[0]),
            "dimension": int(vectors.shape[1]),
            "scoring": kind,
            "temperature": float(temperature),
            "score": "dot(user, item)"
            if kind == "dot"
            else "dot(user / |user|, item / |item|) / temperature (cosine: normalise both, then inner product)",
            "model": type(self.model).__name__,
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "dataset": self.data.name,
            "data_key": self.data.key,
            "max_len": self.datamodule.max_len,
            "rescored_items": [self.data.item_ids[i - 1] for i in rescored_items(self.model)],
        }
        write_json_atomic(out / MANIFEST, manifest)
        return out / MANIFEST


def rescored_items(model) -> list[int]:
    """Internal ids of the items ``model.rescore`` scores otherwise than by their vectors."""
    chain = getattr(model, "chain", None)
    return [] if chain is None else chain.items.tolist()


def read_histories(path: str) -> Iterator[tuple[object, list]]:
    """``(id, items)`` per JSON line ``{"id": ..., "items": [...]}`` of ``path`` (``-``: stdin); ``id``
    defaults to the line number."""
    name = "<stdin>" if path == "-" else path
    if path != "-" and not Path(path).is_file():
        raise DataError(path, "histories file not found")
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
    try:
        for line, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DataError(
                    name, f"not JSON ({err.msg})", line, 'one {"id": ..., "items": [...]} per line'
                ) from None
            if not isinstance(row, dict) or not isinstance(row.get("items"), list):
                raise DataError(name, 'expected an object with an "items" list', line)
            yield row.get("id", line), row["items"]
    finally:
        if stream is not sys.stdin:
            stream.close()


def recommend(
    run: str,
    ckpt_path: str | None = None,
    histories: str = "-",
    out: str = "-",
    top_k: int = 10,
    exclude_seen: bool = True,
    with_vectors: bool = False,
) -> None:
    """Rank the next items for histories in the catalogue's own ids.

    Args:
        run: a run folder (its ``config.yaml``) or a config file: the ``model`` and ``data`` sections are used.
        ckpt_path: the checkpoint to serve; default the run folder's one ``checkpoints/best*.ckpt``.
        histories: JSON-lines file, one ``{"id": ..., "items": [oldest, ..., newest]}`` per line; ``-``: stdin.
        out: JSON-lines output, one ``{"id", "items", "scores"}`` per history (``unknown`` when the
            history held ids the catalogue lacks, ``vector`` with ``with_vectors``); ``-``: stdout.
        top_k: items per history.
        exclude_seen: leave out the history's own items (as ``predict`` does).
        with_vectors: add each history's user vector (what ``export``'s item vectors are scored against).
    """
    rows = list(read_histories(histories))
    server = Recommender.load(run, ckpt_path)
    results = server.recommend([items for _, items in rows], top_k, exclude_seen, with_vectors)
    lines = []
    for (key, _), result in zip(rows, results):
        row = {"id": key, "items": result.items, "scores": result.scores}
        if result.unknown:
            row["unknown"] = result.unknown
            print(
                f"sicsrec recommend: history {key}: {len(result.unknown)} id(s) not in the catalogue, skipped: "
                + ", ".join(result.unknown[:5])
                + (" …" if len(result.unknown) > 5 else "")
                + ("" if result.items else " (no known item left: nothing recommended)"),
                file=sys.stderr,
            )
        if result.vector is not None:
            row["vector"] = result.vector
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    if out == "-":
        sys.stdout.writelines(lines)
        sys.stdout.flush()
    else:
        with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines)
        print(f"recommendations for {len(lines)} histories written to {out}", file=sys.stderr)


def export(run: str, out: str, ckpt_path: str | None = None) -> None:
    """Write the item vectors a model scores against, and a manifest, for an external index.

    Args:
        run: a run folder (its ``config.yaml``) or a config file: the ``model`` and ``data`` sections are used.
        out: output folder (``items.npy`` + ``manifest.json``).
        ckpt_path: the checkpoint to export; default the run folder's one ``checkpoints/best*.ckpt``.
    """
    manifest = Recommender.load(run, ckpt_path).export(out)
    print(f"item vectors and manifest written to {manifest.parent}", file=sys.stderr)
