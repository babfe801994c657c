"""Callbacks that turn results into files (the models never touch files)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

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
        scores = outputs["scores"].float().clone()
        scores[:, 0] = float("-inf")
        if self.exclude_seen:
            scores.scatter_(1, outputs["history"], float("-inf"))
        k = min(self.top_k, scores.shape[1] - 1)
        top = torch.topk(scores, k, dim=1)
        for user, items, values in zip(outputs["user"].tolist(), top.indices.tolist(), top.values.tolist()):
            keep = [(i, v) for i, v in zip(items, values) if v != float("-inf")]
            self.rows.append((user, [i for i, _ in keep], [v for _, v in keep]))

    def on_predict_epoch_end(self, trainer, module) -> None:
        data = trainer.datamodule.data
        path = Path(self.path)
        if not path.is_absolute():
            path = Path(trainer.log_dir or trainer.default_root_dir) / path
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for user, items, values in sorted(self.rows):
                f.write(json.dumps({"user": data.user_ids[user], "items": [data.item_ids[i - 1] for i in items],
                                    "scores": [round(v, 6) for v in values]}, ensure_ascii=False) + "\n")
        print(f"predictions for {len(self.rows)} users written to {path}")
