"""``sicsrec pairs``: LLM-driven sample construction, resumable.

For each user the *target* is the last item of the training part (never the validation or
test item), the candidates are earlier training items, most recent first. Every judgement is
appended to ``judgements.jsonl`` as it is made (flushed and synced per chunk), so a killed run
resumes where it stopped and a finished run costs nothing; ``pairs.jsonl`` and
``pairs_report.json`` are rewritten atomically from the judgements at the end.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np

from sicsrec.content.judges import EmbeddingJudge, Judge, Request, parse_answer
from sicsrec.data.formats import Reader
from sicsrec.data.prepare import PreparedData, prepare, without_items
from sicsrec.errors import ConfigError
from sicsrec.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)
STATUSES = ("chosen", "none", "invalid", "outside", "failed")


def build_requests(
    data: PreparedData, text_column: str, max_candidates: int, held_out: np.ndarray | None = None
) -> tuple[list[Request], int]:
    """One request per user with at least one earlier training item; the count of users without.
    ``held_out``: the cold-start protocol's items, deleted from the training parts first."""
    titles = data.titles_in(text_column)
    requests, without = [], 0
    held_out = np.zeros(0, dtype=np.int64) if held_out is None else held_out
    parts = without_items([data.sequence(u)[:-2] for u in range(data.num_users)], held_out)
    for u in range(data.num_users):
        train = parts[u]
        if len(train) < 2:
            without += 1
            continue
        target = int(train[-1])
        candidates: list[int] = []
        for item in train[-2::-1]:
            item = int(item)
            if item != target and item not in candidates:
                candidates.append(item)
            if len(candidates) == max_candidates:
                break
        if not candidates:
            without += 1
            continue
        lines = [f"{data.item_ids[c - 1]}-{titles[c - 1]}" for c in candidates]
        requests.append(Request(data.user_ids[u], target, candidates, titles[target - 1], lines))
    return requests, without


def read_judgements(path: Path) -> list[dict]:
    """Judgements written so far; a torn last line (a run killed mid-write) is dropped and redone."""
    if not path.is_file():
        return []
    rows, good_bytes = [], 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                rows.append(json.loads(raw))
                good_bytes += len(raw)
            except json.JSONDecodeError:
                log.warning("%s: dropping a torn last line (its user is judged again)", path)
                break
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return rows


def construct_pairs(
    data: PreparedData,
    judge: Judge,
    out: str | Path,
    text_column: str = "en",
    max_candidates: int = 20,
    chunk: int = 64,
    progress: bool = True,
    held_out: np.ndarray | None = None,
) -> dict:
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data.titles_in(text_column)
    requests, without = build_requests(data, text_column, max_candidates, held_out)
    log_path = out / "judgements.jsonl"
    setting = {"data_key": data.key, "text_column": text_column, "max_candidates": max_candidates, **judge.describe()}
    if held_out is not None and len(held_out):  # another protocol: its judgements are not these
        setting["held_out_items"] = [int(i) for i in held_out]
    setting_path = out / "judgements.setting.json"
    if log_path.is_file() and log_path.stat().st_size:
        before = json.loads(setting_path.read_text()) if setting_path.is_file() else None
        if before != json.loads(json.dumps(setting)):
            raise ConfigError(
                f"{out} holds judgements made for another dataset, judge or setting "
                f"({setting_path}): use another `out` folder or delete it to start over"
            )
    else:
        write_json_atomic(setting_path, setting)
    done = read_judgements(log_path)
    judged = {row["user"] for row in done}
    todo = [r for r in requests if r.user not in judged]
    if todo:
        judge.setup(data.titles[text_column])
    with (
        open(log_path, "a", encoding="utf-8") as f,
        tqdm(
            total=len(requests), initial=len(requests) - len(todo), desc="pairs", unit="user", disable=not progress
        ) as bar,
    ):
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            answers = judge(batch)
            for r, answer in zip(batch, answers):
                status, index = parse_answer(answer, r.candidate_lines)
                row = {
                    "user": r.user,
                    "target": data.item_ids[r.target - 1],
                    "answer": answer,
                    "status": status,
                    "chosen": None if index is None else data.item_ids[r.candidates[index] - 1],
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                done.append(row)
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(batch))
    counts = Counter(row["status"] for row in done)
    report = {
        "users": data.num_users,
        "asked": len(done),
        "answered": len(done) - counts["failed"],
        "parsed": counts["chosen"] + counts["none"],
        **{s: counts[s] for s in STATUSES},
        "without_candidates": without,
        "judged_this_run": len(todo),
        "max_candidates": max_candidates,
        "text_column": text_column,
        "dataset": data.name,
        **judge.describe(),
    }
    with atomic_path(out / "pairs.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in done:
            if row["status"] == "chosen":
                f.write(
                    json.dumps(
                        {"user": row["user"], "target": row["target"], "chosen": row["chosen"]}, ensure_ascii=False
                    )
                    + "\n"
                )
    write_json_atomic(out / "pairs_report.json", report)
    return report


def run_pairs(
    root: str,
    judge: Judge | None = None,
    out: str = "runs/pairs",
    text_column: str = "en",
    max_candidates: int = 20,
    chunk: int = 64,
    min_seq_len: int = 3,
    cache_dir: str | None = None,
    cold_items: float = 0.0,
    cold_seed: int = 0,
    reader: Reader | None = None,
) -> dict:
    """Judge one pair per user and write ``pairs.jsonl`` + ``pairs_report.json`` under ``out``.

    Args:
        root: dataset folder.
        judge: ``EmbeddingJudge`` (default, offline), ``HFJudge`` or ``OpenAIJudge``.
        out: output folder (a rerun resumes from its ``judgements.jsonl``).
        text_column: title language (``en`` or ``zh``).
        max_candidates: most recent earlier training items offered per user.
        chunk: users judged between two syncs of the judgement log.
        min_seq_len: as in data preparation.
        cache_dir: cache folder.
        cold_items, cold_seed: the cold-start protocol (as in the sequence DataModule): its
            held-out items are deleted from the training parts first, so no pair holds them.
        reader: the dataset's file layout, as in the sequence DataModule (null: detected from the files).
    """
    data = prepare(root, reader, min_seq_len, False, cache_dir)
    held_out = data.cold_start_items(cold_items, cold_seed)
    report = construct_pairs(
        data, judge or EmbeddingJudge(), out, text_column, max_candidates, chunk, held_out=held_out
    )
    print(json.dumps(report, indent=2, ensure_ascii=False))
    return report
