"""Finding and checking checkpoints: one place for the CLI, serving and the benchmarks.

A file given as a checkpoint is loaded weights-only and refused in one line when it is no
checkpoint or another stage's; a stage-2 checkpoint names its stage-1 file by path and SHA-256,
so it is found again from any working directory and after its run folder moved.
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
    stage-2 checkpoint's folder, else the absolute and the original paths; ``given`` when none does
    (the model then names the problem)."""
    folder = Path(stage2_checkpoint).parent
    relative = record.get("from_checkpoint_folder")
    candidates = [given, folder / relative if relative else None, record.get("absolute"), record.get("path")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            if record.get("sha256") in (None, file_sha256(candidate)):
                return str(candidate)
    return given


def checked(path: str | Path, class_path: str, init_args) -> dict:
    """The checkpoint in ``path`` for the model ``class_path`` builds; a stage-2 one also sets
    ``init_args["stage1_checkpoint"]`` (a dict or jsonargparse Namespace) to its stage-1 file as found."""
    checkpoint = check_checkpoint(path, str(class_path or "").rsplit(".", 1)[-1])
    if "stage1_checkpoint" in checkpoint and init_args is not None:
        init_args["stage1_checkpoint"] = locate_stage1(
            init_args.get("stage1_checkpoint"), path, checkpoint["stage1_checkpoint"]
        )
    return checkpoint
