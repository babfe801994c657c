"""The ``sicsrec`` command: LightningCLI for ``fit|validate|test|predict`` plus ``data ...`` tools."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from sicsrec.callbacks import EpochLines, KeepMetricsOnResume, PredictionWriter, ResumeRandomState
from sicsrec.compat import wandb_init_kwargs
from sicsrec.errors import ConfigError, DataError, TrainingError
from sicsrec.io import write_json_atomic

CKPT_ALIASES = ("last", "best", "hpc", "registry")  # --ckpt_path names Lightning resolves itself, not files

REPORT_PACKAGES = ("sicsrec", "torch", "lightning", "numpy", "transformers", "peft", "timm")

# Warnings every run printed that say nothing about the run (each with why it is harmless here).
KNOWN_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)",  # Lightning's own pytree use under newer torch
    r"The number of training batches .* is smaller than the logging interval",  # epoch values are logged anyway
    r"You are using a custom batch sampler `LengthGroupedBatchSampler`",  # it yields every sample (tested)
    r".*skip_none parameter was deprecated",  # LightningCLI's call into newer jsonargparse
    # main() always hands LightningCLI the command line, its --config files resolved for --dataset
    r"LightningCLI's args parameter is intended to run from within Python",
)


def quiet_known_noise() -> None:
    """Silence what the project causes or knows to be harmless; everything else still shows."""
    import warnings

    for message in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message)
    # Lightning's advertisements for its cloud products ("💡 Tip: ... litlogger / litmodels")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip")
    )


def prepare_wandb(logger) -> None:
    """Lightning's WandbLogger passes ``anonymous=None``, which W&B now warns about on every run, and
    W&B warns "git root … does not exist" when its folder is not there yet: leave the first out and
    create the folder, so the run still records the git state of the code."""
    init = wandb_init_kwargs(logger)
    if init.get("anonymous") is None:
        init.pop("anonymous", None)
    if logger.save_dir:
        Path(logger.save_dir).mkdir(parents=True, exist_ok=True)


def wandb_loggers(trainer) -> list:
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


class SaveConfig(SaveConfigCallback):
    """Writes ``config.yaml`` to the run folder (Lightning's behaviour) and puts the same resolved
    config on the W&B run, so a dashboard shows exactly what ran."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        for logger in wandb_loggers(trainer):
            logger.experiment.config.update({"config": self.config.as_dict()}, allow_val_change=True)


def closest(key: str, valid: list[str]) -> str:
    import difflib

    found = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f"; did you mean {found[0]}?" if found else ""


def config_error_line(message: str, valid_keys: list[str]) -> str:
    """jsonargparse's report of a configuration mistake as one line: a renamed key with its new
    name, an unknown key with the closest valid one (``valid_keys``: the parser's keys)."""
    import importlib
    import inspect
    import re

    from sicsrec.modules.base import REMOVED, RENAMED

    found = re.search(r"Problem with given class_path '([\w.]+)':\s*Option '(\w+)' is not accepted", message)
    if found:
        class_path, key = found.groups()
        where = re.match(r'Parser key "([\w.]+)"', message)
        prefix = f"{where.group(1)}.init_args." if where else "init_args."
        name = class_path.rsplit(".", 1)[-1]
        if key in RENAMED.get(name, {}):
            return f"{prefix}{key} is now {prefix}{RENAMED[name][key]} ({name}: one name per meaning in every stage)"
        if key in REMOVED.get(name, {}):
            return f"{prefix}{key} was removed from {name}: {REMOVED[name][key]}"
        try:
            module, _, attribute = class_path.rpartition(".")
            parameters = list(
                inspect.signature(getattr(importlib.import_module(module), attribute).__init__).parameters
            )
        except (ImportError, AttributeError, TypeError, ValueError):
            parameters = []
        valid = [p for p in parameters if p not in ("self", "args", "kwargs")]
        return f"unknown key {prefix}{key} for {name}{closest(key, valid).replace('mean ', 'mean ' + prefix)}"
    found = re.search(r"does not accept option '([\w.]+)'|unrecognized arguments: --([\w.]+)", message)
    if found:
        key = found.group(1) or found.group(2)
        if key in ("optimizer", "optimiser", "lr_scheduler"):
            return f"unknown key {key}: optimisers and schedulers are model arguments (model.init_args.optimizer)"
        heads = sorted({k.split(".")[0] for k in valid_keys})
        return f"unknown key {key}{closest(key, valid_keys) or closest(key.split('.')[0], heads)}"
    keys = re.findall(r'Parser key "([\w.]+)"', message)
    types = [t for t in re.findall(r"Expected a <class '([\w.]+)'>", message) if t != "NoneType"]
    value = re.search(r"Got value: (.*)", message) or re.search(r"Given value: (.*)", message)
    if keys and types and value:
        key = keys[0] + "".join(f".init_args.{k}" for k in keys[1:])
        return f"{key}: expected {' or '.join(dict.fromkeys(types))}, got {value.group(1).strip()!r}"
    return next((line.strip() for line in message.splitlines() if line.strip()), message)


class SicsrecParser(LightningArgumentParser):
    """Configuration mistakes as one line (a ConfigError), not jsonargparse's usage text and
    union-type report."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            return super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        valid = sorted({a.dest for a in parser._actions if a.dest and a.dest != "help"})
        raise ConfigError(config_error_line(message, valid))


class SicsrecCLI(LightningCLI):
    """LightningCLI with a test + report after ``fit``.

    ``model.num_items`` and ``model.max_len`` are left ``null``: the model takes them from the
    DataModule in ``setup``; a value set by hand that disagrees with the data is an error
    (jsonargparse links would override it silently). A top-level ``optimizer:`` key is rejected:
    optimisers are model arguments, so ``configure_optimizers`` and its parameter groups are never
    replaced silently.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parser_class", SicsrecParser)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("save_config_callback", SaveConfig)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # The DataModules shard their length-grouped batches across ranks themselves.
        parser.set_defaults({"trainer.use_distributed_sampler": False})
        # Length-grouped batches: each epoch has its own number of batches, which Lightning only
        # re-reads when it rebuilds the loader (see SequenceDataModule.train_dataloader).
        parser.set_defaults({"trainer.reload_dataloaders_every_n_epochs": 1})
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, test the best checkpoint, print a metrics table and write metrics.json.",
        )

    def before_instantiate_classes(self) -> None:
        """``validate``, ``test`` and ``predict`` log into ``<version>-<subcommand>`` when the config
        names its logger's version (a step config's ``seed<N>``): beside the fit's run folder,
        never over its ``metrics.json``, ``config.yaml`` and curves."""
        subcommand = self.subcommand
        if subcommand in (None, "fit"):
            return
        loggers = self.config[subcommand].trainer.get("logger")
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init = getattr(logger, "init_args", None)
            version = init.get("version") if init is not None else None
            if isinstance(version, str) and version and not version.endswith(f"-{subcommand}"):
                init.version = f"{version}-{subcommand}"

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        for logger in wandb_loggers(trainer):
            prepare_wandb(logger)
        if self.subcommand != "fit":  # test/predict log into a new folder; the fit's checkpoint record is not needed
            import warnings

            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        if trainer.progress_bar_callback is not None and not sys.stdout.isatty():
            # a log file or CI: one line per epoch instead of a bar that shows only its last frame
            trainer.callbacks.remove(trainer.progress_bar_callback)
            trainer.callbacks.append(EpochLines())
        trainer.callbacks.append(ResumeRandomState())  # always: any checkpoint can be resumed exactly
        trainer.callbacks.append(
            KeepMetricsOnResume(trainer.loggers)
        )  # and its metrics.csv keeps the epochs before the stop
        return trainer

    def before_fit(self) -> None:
        self._fit_started = time.perf_counter()

    def _parse_ckpt_path(self) -> None:
        """LightningCLI would read a ``--ckpt_path``'s hyperparameters here and lay them *over* the
        config: the checkpoint's model class and arguments would replace what the command line
        says (``test --model.init_args.protocol ninerec`` silently tested under the saved
        ``recbole``). sicsrec builds the model the config describes instead — the model itself
        refuses a checkpoint for other data (``num_items``, ``max_len``, the stage-1 SHA-256) — and
        a file that is no checkpoint, or another stage's, is one clear line, not an unpickling
        traceback from deep inside torch."""
        from sicsrec.checkpoints import checked

        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path is not None and path not in CKPT_ALIASES:
            model = self.config[subcommand].get("model")
            checked(path, getattr(model, "class_path", ""), model.init_args if model is not None else None)

    def after_fit(self) -> None:
        from lightning.pytorch.utilities.model_helpers import is_overridden

        if (
            not self.config[self.subcommand].get("test_after_fit", True)
            or self.trainer.interrupted
            or not is_overridden("test_step", self.model)
        ):
            return
        fit_seconds = time.perf_counter() - self._fit_started
        resumed_from = self.trainer.ckpt_path  # then fit_seconds covers only this process's epochs
        best = self.trainer.checkpoint_callback.best_model_path if self.trainer.checkpoint_callback else ""
        fold_in_seconds = self._fold_in(best) if best else None
        results = self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None, verbose=False)
        self._report(
            results,
            {
                "fit_seconds": round(fit_seconds, 2),
                "epochs": self.trainer.current_epoch,
                "resumed_from": str(resumed_from) if resumed_from else None,
                "seconds_per_epoch": None
                if resumed_from
                else round(fit_seconds / max(1, self.trainer.current_epoch), 3),
                "best_checkpoint": best,
                "fold_in_seconds": fold_in_seconds,
                "best_valid": _as_float(getattr(self.trainer.checkpoint_callback, "best_model_score", None)),
            },
        )

    def _fold_in(self, best: str) -> float | None:
        """Stage 2's new-item rows, fitted once with the best weights and written beside the
        checkpoint (``sicsrec fold-in``'s file) before the test reads them: test, predict and
        serving fit nothing. Seconds taken; None for models without them."""
        import torch

        from sicsrec.checkpoints import write_new_items

        model = self.model
        if not hasattr(model, "fold_in_splits") or not model.hparams.get("new_item_fold_in"):
            return None
        started = time.perf_counter()
        state = torch.load(best, map_location=model.device, weights_only=True)["state_dict"]
        model.load_state_dict(state)
        model.eval()
        rows = model.fold_in_splits(self.datamodule)
        if self.trainer.global_rank == 0 and rows:
            write_new_items(best, rows)
        self.trainer.strategy.barrier()
        model.new_item_rows = rows
        return round(time.perf_counter() - started, 2)

    def _read_new_items(self) -> None:
        """``test`` / ``predict --ckpt_path FILE``: the new-item rows fitted for that file, read from beside it."""
        from sicsrec.checkpoints import read_new_items

        path = self.config[self.subcommand].get("ckpt_path")
        if hasattr(self.model, "new_item_rows") and path and path not in CKPT_ALIASES:
            self.model.new_item_rows = read_new_items(path)

    before_test = before_predict = _read_new_items

    def after_test(self) -> None:
        self._report([dict(self.trainer.callback_metrics)], {"checkpoint": self.config["test"].get("ckpt_path")})

    def _report(self, results: list[dict], extra: dict) -> None:
        log_dir = self.trainer.log_dir or self.trainer.default_root_dir  # a collective call: every rank
        if self.trainer.global_rank != 0:
            return
        metrics = {k: _as_float(v) for k, v in (results[0] if results else {}).items() if k.startswith("test/")}
        data = getattr(self.datamodule, "data", None)
        report = {
            **metrics,
            **extra,
            "seed": self.config[self.subcommand].get("seed_everything"),
            "protocol": self.model.hparams.get("protocol"),  # the headline's; the other's keys name theirs
            "dataset": getattr(data, "name", None),
            "data_key": getattr(data, "key", None),
            "git_commit": git_commit(),
            "versions": package_versions(),
        }
        out = Path(log_dir) / "metrics.json"
        write_json_atomic(out, report)
        for logger in wandb_loggers(self.trainer):
            logger.log_table(key="test/metrics_at_k", columns=["view", "k", "hr", "ndcg"], data=metrics_rows(metrics))
            logger.experiment.summary.update({k: v for k, v in report.items() if not isinstance(v, dict)})
        print(format_metrics_table(metrics))
        print(f"metrics written to {out}")


def _as_float(v):
    if v is None:
        return None
    return float(v.item()) if hasattr(v, "item") else float(v)


def git_commit() -> str | None:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    out = {}
    for name in REPORT_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _bucket(key: str) -> str | None:
    """The warm/cold bucket, held-out or cover group, or other protocol a metric key belongs to
    (``test/cold/hr@10`` → ``cold``, ``test/recbole/hr@10`` → ``recbole``), if any."""
    from sicsrec.evaluation import COVER_GROUPS, HELD_OUT_GROUPS, PROTOCOLS, TARGET_BUCKETS

    groups = (*TARGET_BUCKETS, *HELD_OUT_GROUPS, *COVER_GROUPS, *PROTOCOLS)
    return next((part for part in key.split("/")[1:-1] if part in groups), None)


def metrics_rows(metrics: dict[str, float], prefix: str = "test") -> list[list]:
    """``[view, k, hr, ndcg]`` rows of the metrics at every K (view ``main`` for one-view models)."""
    rows = []
    for key, value in sorted(metrics.items()):
        parts = key.split("/")
        if parts[0] != prefix or not parts[-1].startswith("hr@") or _bucket(key):
            continue
        k = int(parts[-1][3:])
        view = "/".join(parts[1:-1]) or "main"
        rows.append([view, k, value, metrics.get(key.replace("/hr@", "/ndcg@"))])
    return sorted(rows, key=lambda r: (r[0], r[1]))


def format_metrics_table(metrics: dict[str, float], prefix: str = "test") -> str:
    """HR and NDCG at each K as a small table (values ×100), then MRR; one column pair per view
    (``test/hr@10`` or, for stage 1, ``test/id/hr@10`` and ``test/content/hr@10``); then HR@10 and
    NDCG@10 by warm/cold bucket of the target (held-out group, cover or none), with its users; then HR@10 and
    NDCG@10 under the other protocol."""
    from sicsrec.evaluation import COVER_GROUPS, HELD_OUT_GROUPS, PROTOCOLS, TARGET_BUCKETS

    buckets = {k: v for k, v in metrics.items() if _bucket(k)}
    metrics = {k: v for k, v in metrics.items() if k not in buckets}
    views = sorted(
        {
            k[len(prefix) + 1 :].rpartition("/")[0]
            for k in metrics
            if k.startswith(prefix + "/") and k.rpartition("/")[2].startswith(("hr@", "ndcg@", "mrr"))
        }
    )
    if len(views) > 1 and "" in views:
        views.remove("")  # test/hr@10 is then only the mean of the views' HR@10
    ks = sorted({int(k.split("@")[1]) for k in metrics if "@" in k})
    tag = {v: f"{prefix}/{v}/" if v else f"{prefix}/" for v in views}
    header = " ".join(
        f"{(v + ' ') if v else ''}HR".rjust(12) + f"{(v + ' ') if v else ''}NDCG".rjust(14) for v in views
    )
    lines = [f"{prefix} metrics (×100)", f"{'K':>4} {header}"]
    for k in ks:
        cells = " ".join(
            f"{100 * metrics.get(f'{tag[v]}hr@{k}', float('nan')):12.2f}"
            f"{100 * metrics.get(f'{tag[v]}ndcg@{k}', float('nan')):14.2f}"
            for v in views
        )
        lines.append(f"{k:>4} {cells}")
    lines.append(
        " MRR "
        + " ".join(f"{100 * metrics.get(f'{tag[v]}mrr', float('nan')):12.2f}" + " " * 14 for v in views).rstrip()
    )
    for view in views:
        for groups, what in (
            (TARGET_BUCKETS, "target's training occurrences"),
            (HELD_OUT_GROUPS, "held-out target"),
            (COVER_GROUPS, "target's cover"),
        ):
            names = [b for b in groups if f"{tag[view]}{b}/users" in buckets]
            if names:
                cells = ", ".join(
                    f"{b} {100 * buckets.get(f'{tag[view]}{b}/hr@10', float('nan')):.2f} / "
                    f"{100 * buckets.get(f'{tag[view]}{b}/ndcg@10', float('nan')):.2f} "
                    f"({buckets[f'{tag[view]}{b}/users']:.0f} users)"
                    for b in names
                )
                lines.append(f"{(view + ' ') if view else ''}HR@10 / NDCG@10 by {what}: {cells}")
        for protocol in PROTOCOLS:
            if f"{tag[view]}{protocol}/hr@10" in buckets:
                masked = "masked" if protocol == "ninerec" else "not masked"
                lines.append(
                    f"{(view + ' ') if view else ''}HR@10 / NDCG@10 under the {protocol} protocol (history {masked}): "
                    f"{100 * buckets[f'{tag[view]}{protocol}/hr@10']:.2f} / "
                    f"{100 * buckets[f'{tag[view]}{protocol}/ndcg@10']:.2f}"
                )
    return "\n".join(lines)


def data_main(argv: list[str]) -> None:
    from jsonargparse import auto_cli

    from sicsrec.data import tools

    auto_cli(
        {"generate": tools.generate, "prepare": tools.prepare_dataset, "stats": tools.stats},
        args=argv,
        as_positional=False,
    )


def step_main(step: str, argv: list[str]) -> None:
    """``sicsrec pairs``, ``features``, ``recommend``, ``export``, ``fold-in``: one function each, configured alike."""
    from jsonargparse import auto_cli

    if step == "pairs":
        from sicsrec.content.pairs import run_pairs as function
    elif step == "features":
        from sicsrec.content.featurize import featurize as function
    elif step == "recommend":
        from sicsrec.serving import recommend as function
    elif step == "fold-in":
        from sicsrec.serving import fold_in as function
    else:
        from sicsrec.serving import export as function
    if step in ("pairs", "features"):
        from sicsrec.dataset import expand_argv

        argv = expand_argv(argv, function)
    auto_cli(function, args=argv, as_positional=False)


USAGE = """usage: sicsrec COMMAND [options]     (sicsrec COMMAND --help for a command's options)

training (LightningCLI; the YAML picks the LightningModule and DataModule by class_path):
  fit | validate | test | predict --config FILE.yaml [--dataset DATA_FILE]
    (a step config of configs/ with a data file of configs/data/: its facts and run folder)
steps:
  data generate --out DIR --users N --items M --seed S   generated NineRec-layout dataset
  data prepare --root DIR                                read, remap, filter, cache; statistics
  data stats --root DIR                                  statistics of a dataset
  pairs --config configs/pairs.yaml --dataset DATA_FILE          LLM-judged item pairs (resumable)
  features --config configs/features.yaml --dataset DATA_FILE    cached item features
  run DATA_FILE [--seeds [S,...]] [--until STEP]         the whole chain, up-to-date steps skipped
  tune DATA_FILE [--seeds [S,...]]                       the ID encoder's grid, picked on validation
serving (RUN: a run folder, or a config file + --ckpt_path):
  recommend --run RUN [--histories F|-] [--out F|-] [--top_k K]   next items for histories in catalogue ids
  export --run RUN --out DIR                             item vectors + manifest for an ANN index
  fold-in --run RUN                                      rows of never-seen items, fitted once beside the checkpoint
  report RUN_FOLDER ... [--out docs/results.md]          tables (mean ± std over seeds) and plots
"""


def main(argv: list[str] | None = None) -> None:
    """Entry point; ``argv`` (without the program name) lets tests call the CLI in-process."""
    args = sys.argv[1:] if argv is None else argv
    if args in ([], ["-h"], ["--help"]):
        print(USAGE)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet_known_noise()
    try:
        if args[:1] == ["data"]:
            data_main(args[1:])
        elif args[:1] in (["pairs"], ["features"], ["recommend"], ["export"], ["fold-in"]):
            step_main(args[0], args[1:])
        elif args[:1] in (["run"], ["tune"]):
            from jsonargparse import auto_cli

            from sicsrec.chain import run
            from sicsrec.tune import tune

            auto_cli(run if args[0] == "run" else tune, args=args[1:])
        elif args[:1] == ["report"]:
            from sicsrec.report import main as report_main

            report_main(args[1:])
        else:
            from sicsrec.dataset import expand_argv

            SicsrecCLI(args=expand_argv(args))
    except SIGTERMException:  # Lightning stops at the next batch and exits with status 0
        print("sicsrec: stopped by SIGTERM; resume with the same command and --ckpt_path last", file=sys.stderr)
        raise SystemExit(143) from None  # 128 + SIGTERM: a scheduler must not count the run as done
    except (DataError, ConfigError) as err:
        print(f"sicsrec: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingError as err:
        print(f"sicsrec: training stopped: {err}", file=sys.stderr)
        raise SystemExit(3) from None
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()  # flushed and complete for `wandb sync`; after an error, a later run in
            # this process (tests, notebooks) must not continue this one


if __name__ == "__main__":
    main()
