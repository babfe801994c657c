"""Callbacks: results into files (the models never touch files), resumable randomness, and
fine-tuning that never ends worse on validation than it started."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from sicsrec.compat import epochs_completed, put_csv_rows_first, set_best_checkpoint, set_early_stopping_best
from sicsrec.io import atomic_path


class PredictionWriter(L.Callback):
    """Writes ``sicsrec predict`` results: each user's top-K items, in original ids, with scores.

    Args:
        path: output JSON-lines file, one ``{"user", "items", "scores"}`` object per user;
            relative paths are under the run's log folder.
        top_k: items per user.
        exclude_seen: leave out items already in the user's history.
    """

    def __init__(self, path: str = "predictions.jsonl", top_k: int = 10, exclude_seen: bool = True):
        self.path, self.top_k, self.exclude_seen = path, top_k, exclude_seen
        self.rows: list[tuple[int, list[int], list[float]]] = []

    def on_predict_epoch_start(self, trainer, module) -> None:
        self.rows = []

    def on_predict_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        from sicsrec.ranking import top_items

        top = top_items(outputs["scores"], outputs["history"], self.top_k, self.exclude_seen)
        self.rows += [(user, items, values) for user, (items, values) in zip(outputs["user"].tolist(), top)]

    def on_predict_epoch_end(self, trainer, module) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, self.rows)
            self.rows = list({row[0]: row for part in parts for row in part}.values())  # padding repeats users
        if trainer.global_rank != 0:
            return
        data = trainer.datamodule.data
        path = Path(self.path)
        if not path.is_absolute():
            path = Path(trainer.log_dir or trainer.default_root_dir) / path
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for user, items, values in sorted(self.rows):
                f.write(
                    json.dumps(
                        {
                            "user": data.user_ids[user],
                            "items": [data.item_ids[i - 1] for i in items],
                            "scores": [round(v, 6) for v in values],
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )
        print(f"predictions for {len(self.rows)} users written to {path}")


class EpochLines(L.Callback):
    """One plain line per epoch — epoch, training loss, the monitored validation metric, seconds —
    for output that is not a terminal (a log file, CI), where a progress bar prints nothing useful
    until the end. The CLI puts it in the progress bar's place there."""

    def __init__(self) -> None:
        self._started = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        import time

        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        import time

        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        loss = metrics.get("train/loss_epoch", metrics.get("train/loss"))
        if loss is not None:
            parts.append(f"train/loss {float(loss):.4f}")
        monitor = getattr(trainer.checkpoint_callback, "monitor", None) or getattr(module, "monitor", None)
        if monitor in metrics:
            parts.append(f"{monitor} {float(metrics[monitor]):.4f}")
        parts.append(f"{time.perf_counter() - self._started:.1f} s")
        print("  ".join(parts), flush=True)


class ResumeRandomState(L.Callback):
    """Saves the random states (Python, NumPy, torch CPU and CUDA) in every checkpoint and puts
    them back just before the first batch after ``--ckpt_path``, so that a resumed run draws the
    same dropout masks as an uninterrupted one would have. (Restoring them any earlier would be
    undone by the draws Lightning makes while it sets up the loaders and the sanity check.)
    Together with the DataModule's batch position this makes a resumed run repeat the original."""

    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        import random

        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain tensors and numbers only: checkpoints stay loadable with weights_only=True
        state = {
            "python": random.getstate(),
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self._pending is None:
            return
        import random

        import numpy as np

        state, self._pending = self._pending, None
        random.setstate(state["python"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class KeepMetricsOnResume(L.Callback):
    """Keeps a run folder's ``metrics.csv``. Lightning's CSV logger deletes the file it finds in
    its version folder when it starts, so a fit resumed with ``--ckpt_path`` into the same folder
    (what ``sicsrec run`` does) would lose the validation curve of every epoch before the stop, and
    a ``test`` pointed at a run's config would lose all of it. The rows are read when the trainer is
    built (before the logger starts) and put back: all of them for validate/test/predict; for a
    resumed fit those up to the checkpoint (the interrupted part of an epoch is logged again); none
    for a fresh fit."""

    def __init__(self, loggers: list) -> None:
        import csv

        from lightning.pytorch.loggers import CSVLogger

        self._rows: dict[int, list[dict]] = {}
        for i, logger in enumerate(loggers):
            path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
            if path is not None and path.is_file():
                with open(path, newline="") as f:
                    self._rows[i] = [{k: v for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]

    def _put_back(self, trainer, keep) -> None:
        rows, self._rows = self._rows, {}
        if not trainer.is_global_zero:
            return
        for i, logged in rows.items():
            put_csv_rows_first(trainer.loggers[i], [r for r in logged if keep(r)])

    def setup(self, trainer, module, stage: str) -> None:
        if stage != "fit":
            self._put_back(trainer, lambda row: True)

    def on_load_checkpoint(self, trainer, module, checkpoint: dict) -> None:
        epoch, step = checkpoint.get("epoch", 0), checkpoint.get("global_step", 0)
        self._put_back(
            trainer, lambda r: int(float(r.get("epoch", 0))) <= epoch and int(float(r.get("step", 0))) <= step
        )

    def on_fit_start(self, trainer, module) -> None:
        self._rows = {}  # a fresh fit: the old rows belonged to an earlier run


class ValidateStartingPoint(L.Callback):
    """Validates the model before its first training step and enters it into checkpointing and
    early stopping as a candidate, like an epoch of its own.

    For a fine-tuning stage that starts from a model worth keeping (stage 2 starts from the sum
    of both stage-1 encoders' scores): the best checkpoint is then the starting point whenever no
    epoch of tuning beats it on validation, and patience counts from it. Skipped on resume.
    """

    def on_train_start(self, trainer, module) -> None:
        from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
        from lightning.pytorch.utilities import rank_zero_info

        if trainer.global_step > 0 or epochs_completed(trainer) > 0:
            return  # resumed: the start was validated in the first run
        values = module.evaluate(trainer.datamodule.val_dataloader())
        for logger in trainer.loggers:
            logger.log_metrics({f"start/{k}": float(v) for k, v in values.items()}, step=0)
        for callback in trainer.callbacks:
            monitor = getattr(callback, "monitor", None)
            if monitor not in values:
                continue
            score = torch.tensor(float(values[monitor]))
            if isinstance(callback, ModelCheckpoint) and callback.save_top_k != 0:
                path = callback.format_checkpoint_name({**values, "epoch": torch.tensor(-1), "step": torch.tensor(0)})
                set_best_checkpoint(callback, path, score)
                trainer.save_checkpoint(path)  # after: the checkpoint's own callback state names it best
            elif isinstance(callback, EarlyStopping):
                set_early_stopping_best(callback, score)
        shown = {k: round(float(v), 4) for k, v in values.items() if k.endswith(("hr@10", "ndcg@10"))}
        rank_zero_info(f"starting point, before training: {shown}")


class KeepEachEncoderBest(L.Callback):
    """Stage 1 trains its two encoders apart, and they peak at different epochs (on the Bili sets
    the ID encoder early, the content encoder late), while early stopping and the best checkpoint
    follow their mean. This keeps each encoder's weights from the epoch of its own best validation
    value and, when the fit ends, writes them together as one stage-1 checkpoint beside the best
    one — a start for stage 2 (``stage1_checkpoint: …/checkpoints/each_encoder_best.ckpt``), not a
    point to resume from.

    Args:
        metric: what each encoder is judged by, logged as ``valid/<encoder>/<metric>``.
        mode: ``max`` or ``min``.
        filename: the file written into the best checkpoint's folder.
    """

    ENCODERS = ("id", "content")

    def __init__(self, metric: str = "hr@10", mode: str = "max", filename: str = "each_encoder_best.ckpt"):
        if mode not in ("max", "min"):
            raise ValueError(f"KeepEachEncoderBest: mode must be max or min, not {mode!r}")
        self.metric, self.mode, self.filename = metric, mode, filename
        self.best: dict[str, dict] = {}  # encoder -> {"value", "epoch", "weights"}; resumes with the run

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict["best"]

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        state = module.state_dict()
        for name in self.ENCODERS:
            value = trainer.callback_metrics.get(f"valid/{name}/{self.metric}")
            if value is None:
                continue
            value, old = float(value), self.best.get(name)
            if old is None or (value > old["value"] if self.mode == "max" else value < old["value"]):
                weights = {k: v.detach().cpu().clone() for k, v in state.items() if k.startswith(f"{name}_encoder.")}
                self.best[name] = {"value": value, "epoch": trainer.current_epoch, "weights": weights}

    def on_fit_end(self, trainer, module) -> None:
        from lightning.pytorch.utilities import rank_zero_info

        if not self.best:
            return
        now = {k: v.detach().clone() for k, v in module.state_dict().items()}
        for best in self.best.values():
            module.load_state_dict(best["weights"], strict=False)
        folder = getattr(trainer.checkpoint_callback, "dirpath", None)
        path = Path(folder or Path(trainer.default_root_dir) / "checkpoints") / self.filename
        trainer.save_checkpoint(path)  # atomic (Lightning writes aside and moves)
        module.load_state_dict(now)
        epochs = ", ".join(f"{name} encoder epoch {b['epoch']} ({b['value']:.4f})" for name, b in self.best.items())
        rank_zero_info(f"each encoder at its own best valid/<encoder>/{self.metric}: {epochs} -> {path}")
