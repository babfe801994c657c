"""Finding and checking checkpoints: one place for the CLI, serving and the benchmarks.

A file given as a checkpoint is loaded weights-only and refused in one line when it is no
checkpoint or another stage's; a stage-2 checkpoint names its stage-1 file by path and SHA-256,
so it is found again from any working directory, after its run folder moved or was renamed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sicsrec.errors import ConfigError


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_checkpoint(path: str | Path, built: str) -> dict:
    """The checkpoint in ``path`` (loaded weights-only) if it is one, and of the model class ``built``."""
    import torch

    if not Path(path).is_file():
        raise ConfigError(f"--ckpt_path {path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike: the file is not one of ours
        raise ConfigError(f"--ckpt_path {path}: not a checkpoint ({type(err).__name__})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(f"--ckpt_path {path}: not a Lightning checkpoint (it holds no state_dict)")
    saved = str(checkpoint.get("hyper_parameters", {}).get("_class_path", "")).rsplit(".", 1)[-1]
    if saved and built and saved != built:
        raise ConfigError(
            f"--ckpt_path {path} is a {saved} checkpoint, but the config builds a {built} (another stage's checkpoint?)"
        )
    return checkpoint


def locate_stage1(given: str | None, stage2_checkpoint: str | Path, record: dict) -> str | None:
    """The stage-1 file a stage-2 checkpoint was trained on, from any working directory: ``given``
    (the config's path) if it holds that file (same SHA-256), else the path stored relative to the
    stage-2 checkpoint's folder, else the absolute and the original paths, else — its run folder
    renamed (``text_only-seed1`` → ``seed1``) — the file of that SHA-256 in a sibling run folder;
    ``given`` when none does (the model then names the problem)."""
    folder = Path(stage2_checkpoint).parent
    relative = record.get("from_checkpoint_folder")
    recorded = [folder / relative if relative else None, record.get("absolute"), record.get("path")]
    candidates = [given, *recorded]
    if record.get("sha256") is not None:
        candidates += [p for r in recorded if r for p in _in_renamed_run_folders(Path(r))]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            if record.get("sha256") in (None, file_sha256(candidate)):
                return str(candidate)
    return given


def _in_renamed_run_folders(path: Path) -> list[Path]:
    """``<step>/<run>/checkpoints/best.ckpt`` → the same file of every other run folder of that step."""
    step, inside = path.parent.parent.parent, path.relative_to(path.parent.parent)
    return sorted(p for p in step.glob(f"*/{inside.as_posix()}") if p != path) if step.is_dir() else []


def checked(path: str | Path, class_path: str, init_args) -> dict:
    """The checkpoint in ``path`` for the model ``class_path`` builds; a stage-2 one also sets
    ``init_args["stage1_checkpoint"]`` (a dict or jsonargparse Namespace) to its stage-1 file as found."""
    checkpoint = check_checkpoint(path, str(class_path or "").rsplit(".", 1)[-1])
    if "stage1_checkpoint" in checkpoint and init_args is not None:
        init_args["stage1_checkpoint"] = locate_stage1(
            init_args.get("stage1_checkpoint"), path, checkpoint["stage1_checkpoint"]
        )
    return checkpoint


def new_items_path(checkpoint: str | Path) -> Path:
    """Where the new-item rows fitted for ``checkpoint`` live: beside it, ``<stem>.new_items.pt``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.new_items.pt")


def write_new_items(checkpoint: str | Path, rows: dict) -> Path:
    """Save ``{split: (items, rows)}`` (``sicsrec fold-in``'s result) beside ``checkpoint``, with the
    checkpoint's SHA-256 so that rows fitted for other weights are never read."""
    import torch

    from sicsrec.io import atomic_path

    path = new_items_path(checkpoint)
    record = {
        "checkpoint_sha256": file_sha256(checkpoint),
        "splits": {split: {"items": items.cpu(), "rows": r.cpu()} for split, (items, r) in rows.items()},
    }
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return path


def read_new_items(checkpoint: str | Path) -> dict:
    """``{split: (items, rows)}`` fitted for ``checkpoint`` (empty when none were written); rows
    fitted for another version of the file are refused in one line."""
    import torch

    path = new_items_path(checkpoint)
    if not path.is_file():
        return {}
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
        sha256, splits = record["checkpoint_sha256"], record["splits"]
        rows = {split: (s["items"], s["rows"]) for split, s in splits.items()}
    except Exception as err:  # a torn or foreign file: say which
        raise ConfigError(f"{path}: not new-item rows ({type(err).__name__}); rerun `sicsrec fold-in`") from None
    if sha256 != file_sha256(checkpoint):
        raise ConfigError(
            f"{path} was fitted for another version of {Path(checkpoint).name}: rerun `sicsrec fold-in` "
            "(or delete it: never-seen items then keep their borrowed rows)"
        )
    return rows
