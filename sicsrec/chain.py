"""``sicsrec run DATA_FILE``: pairs → align → features → stage 1 → stage 2, each tested.

Every step is the same command a user would type, run in its own process, with the step configs
of ``configs/`` (which name no dataset) resolved for the data file's dataset: its facts laid in,
and every output path computed here from its run folder (``runs/<name>/<step>/<version>``) and
handed to the step — the seed's run folder, the stage-1 checkpoint of the same seed (or variant)
for stage 2, the pairs for alignment, the aligned checkpoint for features, the features for the
stages. Each resolved config is written next to its outputs as ``<step>.run.yaml``, so a result
file always sits beside exactly what produced it.

A step is skipped when its outputs exist and its stamp — a hash of its resolved config and of
the stamps of the steps it reads — is unchanged; a changed config or upstream output reruns
it and everything downstream. A training step that was stopped (killed, preempted) is resumed
from its ``last.ckpt`` when it is run again with the same stamp (``--ckpt_path``), so a grid
of runs can span sessions.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import yaml

from sicsrec.dataset import DatasetFile
from sicsrec.errors import ConfigError
from sicsrec.io import write_json_atomic

Step = Literal["pairs", "align", "features", "stage1", "stage2"]
STEPS: tuple[str, ...] = ("pairs", "align", "features", "stage1", "stage2")
STAMP = ".sicsrec-step.json"


def _set(config: dict, dotted: str, value) -> None:
    node = config
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value


def _parse_overrides(pairs: str | list[str]) -> list[tuple[str, object]]:
    """``key=value`` changes of a step config: one string or a list of them."""
    out = []
    for item in [pairs] if isinstance(pairs, str) else pairs:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. model.init_args.use_decoder=false")
        key, value = item.split("=", 1)
        out.append((key.strip(), yaml.safe_load(value)))
    return out


def _merge(base: dict, over: dict) -> dict:
    """``over`` laid onto ``base``: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_step_config(path: Path) -> dict:
    """A step config; one with ``base: OTHER.yaml`` (relative to it) is that config with its own
    keys laid over it, so a variant of the shipped steps (the quick start's) says only what differs."""
    if not path.is_file():
        raise ConfigError(f"{path}: missing (sicsrec run needs {', '.join(s + '.yaml' for s in STEPS)})")
    config = yaml.safe_load(path.read_text()) or {}
    base = config.pop("base", None)
    return _merge(load_step_config(path.parent / base), config) if base else config


def _in_this_process(command: list[str]) -> int:
    """``sicsrec COMMAND`` in this process; its exit status."""
    from sicsrec.cli import main

    try:
        main(command)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    return 0


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _loggers(config: dict) -> list[dict]:
    loggers = config.get("trainer", {}).get("logger") or []
    return loggers if isinstance(loggers, list) else [loggers]


class Chain:
    """The steps of one dataset. ``variant`` names a set of stage overrides (an ablation): the
    stages it changes run into ``<stage>/<variant>-seed<N>``, never over the full model's.

    Args:
        data_file: the dataset's data file (``configs/data/<name>.yaml``).
        steps: folder of the step configs (``pairs.yaml`` … ``stage2.yaml``).
        overrides: per step, ``key=value`` changes of its config.
        python: the interpreter each step runs in, in a process of its own (as a user would type
            it); None: every step in this process, which saves the start-up of each (the quick start).
    """

    def __init__(
        self,
        data_file: str | Path,
        steps: str | Path = "configs",
        variant: str = "",
        overrides: dict[str, str | list[str]] | None = None,
        python: str | None = sys.executable,
    ):
        self.dataset = DatasetFile.load(data_file)
        self.steps = Path(steps)
        if not self.steps.is_dir():
            raise ConfigError(f"--steps {self.steps}: not a folder of step configs (pairs.yaml … stage2.yaml)")
        self.variant = variant
        self.overrides = {step: _parse_overrides((overrides or {}).get(step) or []) for step in STEPS}
        shared = [step for step in ("pairs", "align", "features") if self.overrides[step]]
        if variant and shared:
            raise ConfigError(
                f"--variant {variant} with --{shared[0]} overrides: the content steps' outputs are the dataset's, "
                "shared by every variant; give those overrides without --variant"
            )
        self.python = python

    def load(self, step: str) -> dict:
        return load_step_config(self.steps / f"{step}.yaml")

    # ---- where each step writes: computed from the data file's run folder ---------------------
    def pairs_file(self) -> Path:
        return self.dataset.pairs_file()

    def align_checkpoint(self) -> Path:
        return self.dataset.align_checkpoint()

    def features_file(self) -> Path:
        return self.dataset.features_file()

    def run_dir(self, step: str, seed: int) -> Path:
        return self.dataset.run_dir(step, self.version(step, seed))

    def version(self, step: str, seed: int) -> str:
        """``seed<N>``, or ``<variant>-seed<N>`` when the variant changes this step or stage 1
        (a stage-2 ablation reuses the full model's stage 1)."""
        changed = self.overrides["stage1"] or (step == "stage2" and self.overrides["stage2"])
        return f"{self.variant}-seed{seed}" if self.variant and changed else f"seed{seed}"

    def content_config(self, step: str) -> dict:
        """pairs, align or features: the step config for this dataset, with the paths it reads and writes."""
        from sicsrec.content.featurize import featurize
        from sicsrec.content.pairs import run_pairs

        d = self.dataset
        if step == "pairs":
            config = d.resolve_function(self.load(step), run_pairs)
            config["out"] = str(self.pairs_file().parent)
        elif step == "features":
            config = d.resolve_function(self.load(step), featurize)
            config.update(align_checkpoint=str(self.align_checkpoint()), out=str(self.features_file().parent))
        else:
            config = d.resolve(self.load(step))
            config["data"]["init_args"]["pairs"] = str(self.pairs_file())
            for callback in config["trainer"].get("callbacks") or []:
                if callback["class_path"].endswith("ModelCheckpoint"):
                    callback.setdefault("init_args", {})["dirpath"] = str(self.align_checkpoint().parent)
            self._place_loggers(config, "align", "")
        for key, value in self.overrides[step]:
            _set(config, key, value)
        return config

    def stage_config(self, step: str, seed: int, version: str | None = None) -> dict:
        """The stage's config for one seed: its own run folder, seed, features, stage-1 checkpoint, overrides."""
        version = version or self.version(step, seed)
        config = self.dataset.resolve(self.load(step), seed, version)
        config["seed_everything"] = seed
        self._place_loggers(config, step, version)
        if "features" in config["data"]["init_args"]:  # the ID encoder (id.yaml) reads none
            config["data"]["init_args"]["features"] = str(self.features_file())
        if step == "stage2":
            config["model"]["init_args"]["stage1_checkpoint"] = str(
                self.run_dir("stage1", seed) / "checkpoints" / "best.ckpt"
            )
        for key, value in self.overrides.get(step, []):
            _set(config, key, value)
        return config

    def fit(
        self, step: str, seed: int, upstream: str | None, version: str | None = None, overrides: dict | None = None
    ) -> Path:
        """Fit (and test) one run of a stage config unless it is up to date; its ``metrics.json``.
        ``overrides``: dotted keys laid over the config (a grid point of ``sicsrec tune``)."""
        version = version or self.version(step, seed)
        config = self.stage_config(step, seed, version)
        for key, value in (overrides or {}).items():
            _set(config, key, value)
        run_dir = self.dataset.run_dir(step, version)
        run_dir.mkdir(parents=True, exist_ok=True)
        config_path = run_dir / f"{step}.run.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._run(
            f"{step} {version}",
            run_dir,
            [run_dir / "metrics.json", run_dir / "checkpoints" / "best.ckpt"],
            _digest(step, config, upstream),
            ["fit", "--config", str(config_path)],
        )
        return run_dir / "metrics.json"

    def _place_loggers(self, config: dict, step: str, version: str) -> None:
        run = self.dataset.run_folder
        for logger in _loggers(config):
            init = logger.setdefault("init_args", {})
            if logger["class_path"].endswith("CSVLogger"):
                init.update(save_dir=str(run), name=step, version=version)
            elif logger["class_path"].endswith("WandbLogger"):
                name = "-".join(part for part in (self.dataset.name, step, version) if part)
                init.update(name=name, save_dir=str(run / step / version))

    # ---- running --------------------------------------------------------------------------------
    def _stamp(self, out_dir: Path, finished: bool = True) -> str | None:
        path = out_dir / STAMP
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return record.get("stamp") if record.get("finished", True) == finished else None

    def _run(self, name: str, out_dir: Path, outputs: list[Path], stamp: str, command: list[str]) -> bool:
        """Run ``command`` unless ``outputs`` exist with this ``stamp``; True when it ran. A fit that
        was started with this same stamp and left a ``last.ckpt`` is resumed from it."""
        if self._stamp(out_dir) == stamp and all(p.exists() for p in outputs):
            print(f"[sicsrec run] {name}: up to date", flush=True)
            return False
        # a stage's run folder holds checkpoints/; alignment's output folder is its checkpoint folder
        last = next((p for p in (out_dir / "checkpoints" / "last.ckpt", out_dir / "last.ckpt") if p.is_file()), None)
        if command[0] == "fit" and self._stamp(out_dir, finished=False) == stamp and last is not None:
            command = [*command, "--ckpt_path", str(last)]
        write_json_atomic(out_dir / STAMP, {"stamp": stamp, "command": command, "finished": False})
        print(f"[sicsrec run] {name}: {' '.join(command)}", flush=True)
        if self.python is None:
            code = _in_this_process(command)
        else:
            code = subprocess.run([self.python, "-m", "sicsrec.cli", *command], env={**os.environ}).returncode
        if code != 0:
            raise SystemExit(
                f"sicsrec run: step {name} failed (exit {code}); fix it and run again (finished steps are kept)"
            )
        missing = [str(p) for p in outputs if not p.exists()]
        if missing:
            raise SystemExit(f"sicsrec run: step {name} finished but did not write {missing}")
        write_json_atomic(out_dir / STAMP, {"stamp": stamp, "command": command, "finished": True})
        return True

    def run(self, seeds: list[int], until: str = "stage2", start: str = "pairs") -> list[Path]:
        """Run the chain from ``start`` up to ``until``; return the stage result files (``metrics.json``).
        Steps before ``start`` are not run or checked: their outputs are used as they are."""
        for name, value in (("until", until), ("start", start)):
            if value not in STEPS:
                raise ConfigError(f"--{name} {value}: expected one of {', '.join(STEPS)}")
        last = STEPS.index(until)
        stamps: dict[str, str] = {}
        for step in ("pairs", "align", "features")[: last + 1]:
            if STEPS.index(step) < STEPS.index(start):
                out = {"pairs": self.pairs_file(), "align": self.align_checkpoint(), "features": self.features_file()}[
                    step
                ]
                if not out.exists():
                    raise ConfigError(f"--start {start}: {out} (the output of {step}) does not exist")
                stamps[step] = _digest(step, "as found", out.stat().st_mtime)
                print(f"[sicsrec run] {step}: not checked (--start {start}), using {out}", flush=True)
                continue
            config = self.content_config(step)
            upstream = [stamps[s] for s in STEPS[: STEPS.index(step)] if s in stamps]
            stamps[step] = _digest(step, config, upstream)
            out = {"pairs": self.pairs_file(), "align": self.align_checkpoint(), "features": self.features_file()}[step]
            folder = out.parent.parent if step == "align" else out.parent  # align: runs/<name>/align/
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{step}.run.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            command = (
                ["fit", "--config", str(path), "--test_after_fit", "false"]
                if step == "align"
                else [step, "--config", str(path)]
            )
            self._run(step, out.parent, [out], stamps[step], command)
        results = []
        for seed in seeds:
            for step in ("stage1", "stage2")[: max(0, last - 2)]:
                if STEPS.index(step) < STEPS.index(start):
                    continue
                upstream = stamps["features"] if step == "stage1" else self._stamp(self.run_dir("stage1", seed))
                results.append(self.fit(step, seed, upstream))
        return results


def run(
    data_file: str,
    seeds: list[int] | None = None,
    until: Step = "stage2",
    start: Step = "pairs",
    variant: str = "",
    steps: str = "configs",
    pairs: str | list[str] | None = None,
    align: str | list[str] | None = None,
    features: str | list[str] | None = None,
    stage1: str | list[str] | None = None,
    stage2: str | list[str] | None = None,
    one_process: bool = False,
) -> None:
    """Run a dataset's whole chain: pairs → align → features → stage 1 → stage 2 (each tested).

    Args:
        data_file: the dataset's data file (name, root, reader, text_column, protocol), e.g.
            configs/data/bili_food.yaml; every output goes under its run folder, runs/<name>/.
        seeds: seeds of the stage runs (default: stage1.yaml's seed_everything).
        until: last step to run.
        start: first step to run; the outputs of earlier steps are used as they are, unchecked.
        variant: name of an ablation; its runs go to <stage>/<variant>-seed<N>.
        steps: folder of the step configs (pairs.yaml, align.yaml, features.yaml, stage1.yaml, stage2.yaml).
        pairs, align, features: overrides of those steps' configs: key=value (e.g. trainer.max_epochs=3),
            or a list of them.
        stage1: overrides of stage1.yaml, key=value (e.g. model.init_args.contrastive_weight=0).
        stage2: overrides of stage2.yaml, key=value (e.g. model.init_args.use_decoder=false).
        one_process: every step in this process, without the start-up of a process per step (the
            quick start); by default each step runs in its own, as a user would type it.
    """
    overrides = {"pairs": pairs, "align": align, "features": features, "stage1": stage1, "stage2": stage2}
    chain = Chain(data_file, steps, variant, overrides, None if one_process else sys.executable)
    seeds = seeds or [int(chain.load("stage1").get("seed_everything") or 2024)]
    for path in chain.run(seeds, until, start):
        print(f"[sicsrec run] result: {path}")
