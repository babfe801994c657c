"""A dataset as one small YAML file, and the run folder every output path derives from.

The step configs (``configs/stage1.yaml`` …) name no dataset and no run path: where a path is
needed they write a placeholder — ``{run}`` (the dataset's run folder, ``runs/<name>``),
``{seed}`` (the run's ``seed_everything``), ``{version}`` (``seed<N>``, or ``<variant>-seed<N>``
for an ablation) and ``{dataset}`` (its name). A data file gives the dataset's facts::

    name: my_shop                       # runs go to runs/my_shop/<step>/<version>
    root: data/my_shop
    reader: {class_path: sicsrec.data.CatalogueFormat, init_args: {items: products.csv}}
    text_column: en
    protocol: recbole

``resolve`` lays those facts and the placeholders' values into one step's config;
``sicsrec run DATA_FILE`` does it for every step, and ``--dataset DATA_FILE`` for a hand-run step
(``sicsrec fit --config configs/stage1.yaml --dataset configs/data/bili_food.yaml``).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from sicsrec.data.features import MODALITIES
from sicsrec.errors import ConfigError

PLACEHOLDER = re.compile(r"\{(run|seed|version|dataset)\}")
NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class DatasetFile:
    """Args:
    name: names the run folder (``runs/<name>``) and the W&B runs.
    root: dataset folder, relative to the working directory.
    reader: file layout (a reader class path, or ``{class_path, init_args}``); null: detected.
    text_column: the title language the content steps read (``en``, ``zh``, or a catalogue's own).
    protocol: evaluation protocol: ``recbole`` (history not masked) or ``ninerec`` (masked).
    cold_items, cold_seed: the cold-start protocol (``SequenceDataModule``), for every step.
    modalities: the content the recommender's item vectors carry (``[text]``, ``[image]`` or
        both); null: every one the catalogue has. The content steps (pairs, alignment, features)
        still use every modality the catalogue has: the text-image pairs align the text encoder
        too, and an ablation of another modality reuses their outputs.
    runs: the run folder, if not ``runs/<name>``.
    """

    path: Path
    name: str
    root: str
    reader: str | dict | None = None
    text_column: str = "en"
    protocol: str = "recbole"
    cold_items: float = 0.0
    cold_seed: int = 0
    modalities: list[str] | None = None
    runs: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> DatasetFile:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such data file (a dataset's name, root, reader, text_column, protocol)")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a data file is a mapping (name: …, root: …)")
        known = [f.name for f in fields(cls) if f.name != "path"]
        for key in values:
            if key not in known:
                near = difflib.get_close_matches(str(key), known, n=1)
                raise ConfigError(f"{path}: unknown key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        for key in ("name", "root"):
            if not values.get(key):
                raise ConfigError(f"{path}: {key} is missing")
        if not NAME.fullmatch(str(values["name"])):
            raise ConfigError(f"{path}: name {values['name']!r}: letters, digits, '_', '.', '-' only (a folder name)")
        if values.get("protocol", "recbole") not in ("recbole", "ninerec"):
            raise ConfigError(f"{path}: protocol {values['protocol']!r}: expected recbole or ninerec")
        modalities = values.get("modalities")
        if modalities is not None and (
            not isinstance(modalities, list)
            or not modalities
            or len(set(modalities)) != len(modalities)
            or not set(modalities) <= set(MODALITIES)
        ):
            raise ConfigError(f"{path}: modalities {modalities!r}: expected a list of {' and '.join(MODALITIES)}")
        return cls(path=path, **{k: values[k] for k in values})

    @property
    def run_folder(self) -> Path:
        return Path(self.runs) if self.runs else Path("runs") / self.name

    # ---- where each step writes (the layout the step configs' placeholders spell too) ----------
    def pairs_file(self) -> Path:
        return self.run_folder / "pairs" / "pairs.jsonl"

    def align_checkpoint(self) -> Path:
        return self.run_folder / "align" / "checkpoints" / "best.ckpt"

    def features_file(self) -> Path:
        return self.run_folder / "features" / "features.json"

    def run_dir(self, step: str, version: str) -> Path:
        return self.run_folder / step / version

    # ---- one step's config ---------------------------------------------------------------------
    def resolve(self, config: dict, seed: int | None = None, version: str | None = None) -> dict:
        """``config`` (a step's YAML as a dict) with the placeholders filled in and this dataset's
        facts laid in where the step takes them: ``data.init_args`` of a LightningCLI config
        (``root``, ``text_column``, ``reader``, ``cold_items``, ``cold_seed``, as its DataModule
        accepts them; ``modalities`` where it reads features: not the ID encoder's) and
        ``model.init_args.protocol``; the top level of a function step's config (``sicsrec pairs`` /
        ``features``)."""
        seed = config.get("seed_everything") if seed is None else seed
        values = {"run": str(self.run_folder), "dataset": self.name, "seed": None if seed is None else str(seed)}
        values["version"] = version or (None if seed is None else f"seed{seed}")
        out = _substitute(copy.deepcopy(config), values)
        data = out.get("data")
        if isinstance(data, dict):
            init = data.setdefault("init_args", {})
            accepted = _parameters(data.get("class_path")) - (set() if "features" in init else {"modalities"})
            init.update({k: v for k, v in self.facts().items() if k in accepted})
        model = out.get("model")
        if isinstance(model, dict) and "protocol" in _parameters(model.get("class_path")):
            model.setdefault("init_args", {})["protocol"] = self.protocol
        return out

    def resolve_function(self, config: dict, function) -> dict:
        """A function step's config (``sicsrec pairs``, ``features``): placeholders and the facts it takes."""
        out = _substitute(copy.deepcopy(config), {"run": str(self.run_folder), "dataset": self.name})
        accepted = set(inspect.signature(function).parameters)
        out.update({k: v for k, v in self.facts().items() if k in accepted})
        return out

    def facts(self) -> dict:
        """What a step that reads the data takes from this file: root and text column, and the
        reader, cold-start protocol and the recommender's modalities when they are set."""
        given = {"reader": self.reader, "cold_items": self.cold_items, "cold_seed": self.cold_seed,
                 "modalities": self.modalities}  # fmt: skip
        return {"root": self.root, "text_column": self.text_column, **{k: v for k, v in given.items() if v}}


def _parameters(class_path: str | None) -> set[str]:
    if not class_path or "." not in str(class_path):
        return set()
    module, _, name = str(class_path).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return set()  # LightningCLI names the bad class_path itself
    return set(inspect.signature(cls.__init__).parameters)


def _substitute(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str) and PLACEHOLDER.search(node):
        missing = [m for m in PLACEHOLDER.findall(node) if values.get(m) is None]
        if missing:
            raise ConfigError(f"{node!r} needs {{{missing[0]}}}: set seed_everything (or --seed_everything)")
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], node)
    return node


def placeholders(config: Any) -> set[str]:
    """The placeholders ``config`` (a step's YAML, as loaded) still holds."""
    if isinstance(config, dict):
        config = list(config.values())
    if isinstance(config, list):
        return set().union(*map(placeholders, config)) if config else set()
    return set(PLACEHOLDER.findall(config)) if isinstance(config, str) else set()


def expand_argv(argv: list[str], function=None) -> list[str]:
    """Each ``--config`` file of a command line with its placeholders filled in (written to a
    temporary file in its stead): for the dataset of ``--dataset FILE`` (dropped from the line),
    or — a config that names its own paths, like the quick start — only ``{seed}`` and
    ``{version}``. ``{version}`` is ``seed<N>``; ``--variant NAME`` (dropped too) makes it
    ``NAME-seed<N>``, as ``sicsrec run --variant`` does. ``function``: the step's function for
    ``sicsrec pairs`` / ``features``; None for LightningCLI subcommands. Flags after ``--config``
    still override what it says."""
    args, given = [], {}
    it = iter(argv)
    for arg in it:
        name = arg.split("=", 1)[0]
        if name in ("--dataset", "--variant"):
            value = arg.split("=", 1)[1] if "=" in arg else next(it, None)
            if not value:
                raise ConfigError(
                    f"{name} needs a value (e.g. --dataset configs/data/bili_food.yaml, --variant lr3e-4)"
                )
            given[name] = value
        else:
            args.append(arg)
    dataset = DatasetFile.load(given["--dataset"]) if "--dataset" in given else None
    variant = given.get("--variant")
    if variant is not None and not NAME.fullmatch(variant):
        raise ConfigError(f"--variant {variant!r}: letters, digits, '_', '.', '-' only (a folder name)")
    seed = _flag(args, "--seed_everything")
    out, folder = [], None
    it = iter(args)
    for arg in it:
        if arg != "--config" and not arg.startswith("--config="):
            out.append(arg)
            continue
        path = Path(next(it, "") if arg == "--config" else arg.split("=", 1)[1])
        config = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        if not isinstance(config, dict) or (dataset is None and not placeholders(config)):
            out += ["--config", str(path)]  # LightningCLI reports a missing or malformed file itself
            continue
        run_seed = int(seed) if seed is not None else config.get("seed_everything")
        version = None if run_seed is None else (f"{variant}-" if variant else "") + f"seed{run_seed}"
        if dataset is not None and function is None:
            config = dataset.resolve(config, run_seed, version)
        elif dataset is not None:
            config = dataset.resolve_function(config, function)
        elif placeholders(config) & {"run", "dataset"}:
            raise ConfigError(
                f"{path} is a step config (it writes under {{run}}): name the dataset with --dataset DATA_FILE "
                "(e.g. configs/data/bili_food.yaml)"
            )
        else:
            config = _substitute(config, {"seed": None if run_seed is None else str(run_seed), "version": version})
        if folder is None:
            import atexit
            import shutil
            import tempfile

            folder = Path(tempfile.mkdtemp(prefix="sicsrec-config-"))
            atexit.register(shutil.rmtree, folder, True)
        resolved = folder / f"{len(out)}-{path.name}"
        resolved.write_text(yaml.safe_dump(config, sort_keys=False))
        out += ["--config", str(resolved)]
    return out


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None
