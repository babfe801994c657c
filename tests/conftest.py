import os
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
NINEREC = REPO.parent / "shared" / "data" / "ninerec"

# Two threads: the CI machine's two vCPUs (in-process training runs about twice as fast as on one);
# one per worker when `make test` runs two pytest workers (pytest-xdist), which share those vCPUs.
# Tests that compare a run in this process with one in a subprocess started with OMP_NUM_THREADS=1
# run theirs inside ``one_thread()``: the same arithmetic, bit for bit.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1)
torch.set_num_threads(THREADS)


# A random-weight one-layer MiniLM: fast content features and alignment runs in tests.
TINY_TEXT_ENCODER = {
    "model": "minilm",
    "random_init": True,
    "config_overrides": {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 32, "num_attention_heads": 2},
}


@contextmanager
def one_thread():
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(THREADS)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Caches go to a per-session folder, never to ~/.cache or next to the data."""
    os.environ["SICSREC_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("WANDB_MODE", "offline")
    # Nothing may come from a hub at test time: any attempt fails instead of downloading.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    yield


def ninerec(name: str) -> Path:
    """A real NineRec dataset, read in place; the test is skipped, with the reason, where it is absent."""
    path = NINEREC / name
    if not (path / "sequential_data.txt").is_file():
        pytest.skip(f"real NineRec data absent: {path}/sequential_data.txt (read in place from ../shared/data/ninerec)")
    return path


def movielens() -> Path:
    """MovieLens-100k with posters, read in place; skipped, with the reason, where it is absent."""
    path = REPO.parent / "shared" / "data" / "movielens" / "ml-100k"
    if not (path / "items.csv").is_file():
        pytest.skip(f"MovieLens-100k absent: {path}/items.csv (read in place from ../shared/data/movielens)")
    return path


def training_only_trainer(max_epochs: int, **kwargs):
    """A Lightning trainer that fits without validating and writes nothing (no logs, no checkpoints)."""
    import lightning as L

    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(max_epochs=max_epochs, limit_val_batches=0, num_sanity_val_steps=0, **quiet, **kwargs)


@pytest.fixture(scope="session")
def generated(tmp_path_factory) -> Path:
    """A small generated dataset with covers and all three planted signals."""
    from sicsrec.data.generate import generate

    return generate(tmp_path_factory.mktemp("gen") / "Gen", users=600, items=120, seed=3)


@pytest.fixture(scope="session")
def features(generated, tmp_path_factory) -> Path:
    """Text features of ``generated`` from a tiny random-weight MiniLM (fast; content models need them)."""
    from sicsrec.content.encoders import TextEncoder
    from sicsrec.content.featurize import featurize

    out = tmp_path_factory.mktemp("features")
    text = TextEncoder(**TINY_TEXT_ENCODER)
    featurize(str(generated), text=text, out=str(out))
    return out / "features.json"


@pytest.fixture
def forbid_fold_in(monkeypatch):
    """Call it, and from then on fitting new-item rows fails the test: what test, predict and
    serving must never do (the fit writes them once, beside its checkpoint)."""
    import sicsrec.modules.stage2 as stage2_module

    def fitted(*args, **kwargs):
        raise AssertionError("new-item rows fitted at test or load time")

    return lambda: monkeypatch.setattr(stage2_module, "fold_in", fitted)
