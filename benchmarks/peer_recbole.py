"""Peer comparison: RecBole 1.2.1's SASRec and our ID encoder on the same split of a dataset.

    .venv/bin/python benchmarks/peer_recbole.py --dataset Bili_Food --hidden 64

RecBole runs in a throw-away virtual environment (``benchmarks/.peer/venv``, created on
first use; never a dependency of sicsrec) with ``pandas==2.2.3``, aliases for numpy's removed
``np.float_``/``np.complex_``/``np.unicode_`` and ``weights_only=False`` for reloading its own
checkpoint. Its results are saved in ``benchmarks/results/`` so a rerun does not repeat them
(``--rerun-recbole`` forces it). Ours trains in-process with the same hyperparameters, split,
early stopping (validation HR@10, patience 10) and seed; after each epoch it is also tested,
off the clock, to find when it first reaches RecBole's best test NDCG@10.

Prints seconds per epoch (training + validation), wall time to RecBole's best test NDCG@10,
and the final test metrics (best validation checkpoint) of both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import textwrap
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PEER = BENCH / ".peer"

DRIVER = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    for name, alias in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if not hasattr(np, name):
            setattr(np, name, alias)
    import torch
    _load = torch.load
    torch.load = lambda *a, **k: _load(*a, **{**k, "weights_only": False})
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed, init_logger

    args = json.loads(sys.argv[1])
    torch.set_num_threads(args.pop("threads"))
    out = args.pop("out")
    config = Config(model="SASRec", dataset=args.pop("dataset"), config_dict=args)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    init_seed(config["seed"], config["reproducibility"])
    model = SASRec(config, train.dataset).to(config["device"])
    trainer = Trainer(config, model)
    epochs = []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch
    def timed_train(*a, **k):
        t = time.perf_counter(); r = train_epoch(*a, **k)
        epochs.append({"train_s": time.perf_counter() - t}); return r
    def timed_valid(*a, **k):
        t = time.perf_counter(); score, result = valid_epoch(*a, **k)
        epochs[-1].update(valid_s=time.perf_counter() - t, valid_hr10=float(score)); return score, result
    trainer._train_epoch, trainer._valid_epoch = timed_train, timed_valid
    best_score, _ = trainer.fit(train, valid, saved=True, show_progress=False)
    test_result = trainer.evaluate(test, load_best_model=True, show_progress=False)
    best_epoch = max(i for i, e in enumerate(epochs) if e.get("valid_hr10") == best_score)
    json.dump({"epochs": epochs, "best_epoch": best_epoch, "best_valid_hr10": float(best_score),
               "test": {k: float(v) for k, v in test_result.items()}}, open(out, "w"), indent=2)
""")


def recbole_python() -> Path:
    python = PEER / "venv" / "bin" / "python"
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(PEER / "venv")], check=True)
        subprocess.run(
            [
                str(PEER / "venv" / "bin" / "pip"),
                "install",
                "-q",
                "recbole==1.2.1",
                "pandas==2.2.3",
                "numpy<2.5",
                "torch==2.14.1",
            ],
            check=True,
        )
    return python


def write_atomic_files(dataset: str, data_root: Path) -> Path:
    """RecBole's .inter file from our prepared data: the same users, order and items."""
    from sicsrec.data import prepare

    data = prepare(data_root / dataset)
    folder = PEER / "data" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(data.num_users):
        for t, item in enumerate(data.sequence(u)):
            lines.append(f"{u}\t{item}\t{t}")
    (folder / f"{dataset}.inter").write_text("\n".join(lines) + "\n")
    return PEER / "data"


def run_recbole(args, epochs: int | None = None, tag: str = "") -> dict:
    out = BENCH / "results" / f"recbole_{args.dataset}_h{args.hidden}_s{args.seed}{tag}.json"
    if out.exists() and not args.rerun_recbole:
        print(f"RecBole results loaded from {out} (--rerun-recbole to repeat)")
        return json.loads(out.read_text())
    data_path = write_atomic_files(args.dataset, Path(args.data_root))
    config = {
        "dataset": args.dataset,
        "data_path": str(data_path),
        "checkpoint_dir": str(PEER / "saved"),
        "out": str(out) + ".tmp",
        "threads": args.threads,
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 50,
        "train_neg_sample_args": None,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [5, 10, 20],
        "valid_metric": "Hit@10",
        "hidden_size": args.hidden,
        "inner_size": 256,
        "n_layers": 2,
        "n_heads": 2,
        "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "initializer_range": 0.02,
        "loss_type": "CE",
        "train_batch_size": 1024,
        "eval_batch_size": 2048,
        "learning_rate": 0.001,
        "epochs": epochs or args.max_epochs,
        "stopping_step": 10,
        "eval_step": 1,
        "seed": args.seed,
        "reproducibility": True,
        "use_gpu": False,
        "device": "cpu",
        "worker": 0,
        "show_progress": False,
        "log_wandb": False,
        "state": "WARNING",
    }
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([str(recbole_python()), "-c", DRIVER, json.dumps(config)], check=True, cwd=PEER, env=env)
    os.replace(str(out) + ".tmp", out)
    return json.loads(out.read_text())


def run_ours(args, target_ndcg: float) -> dict:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from sicsrec.data import SequenceDataModule
    from sicsrec.evaluation import evaluate
    from sicsrec.modules import Stage1Module

    torch.set_num_threads(args.threads)

    class Clock(L.Callback):
        """Training + validation time per epoch; the per-epoch test runs off the clock."""

        def __init__(self):
            self.epochs, self.elapsed, self.reached = [], 0.0, None

        def on_train_epoch_start(self, trainer, module):
            self.start = time.perf_counter()

        def on_validation_epoch_end(self, trainer, module):
            if trainer.sanity_checking:
                return
            seconds = time.perf_counter() - self.start
            self.elapsed += seconds
            module.eval()
            ndcg = evaluate(module.score, trainer.datamodule.test_dataloader())["ndcg@10"]
            module.train()
            if self.reached is None and ndcg >= target_ndcg:
                self.reached = self.elapsed
            self.epochs.append({"seconds": seconds, "test_ndcg10": ndcg})

    L.seed_everything(args.seed, verbose=False)
    dm = SequenceDataModule(
        str(Path(args.data_root) / args.dataset), batch_size=1024, eval_batch_size=2048, seed=args.seed
    )
    model = Stage1Module(hidden_size=args.hidden, inner_size=256, use_content=False)
    clock = Clock()
    ckpt = ModelCheckpoint(
        dirpath=PEER / "ours" / f"{args.dataset}_h{args.hidden}",
        monitor="valid/hr@10",
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        max_epochs=args.max_epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[EarlyStopping("valid/hr@10", mode="max", patience=10), ckpt, clock],
    )
    trainer.fit(model, dm)
    test = trainer.test(model, dm, ckpt_path=ckpt.best_model_path, verbose=False)[0]
    return {
        "epochs": clock.epochs,
        "reached_s": clock.reached,
        "test": test,
        "best_epoch": int(Path(ckpt.best_model_path).stem.split("epoch=")[1].split("-")[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="Bili_Food")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "ninerec"))
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--max-epochs", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rerun-recbole", action="store_true")
    parser.add_argument(
        "--time-recbole-epochs",
        type=int,
        default=0,
        help="also time this many RecBole epochs on their own (on a quiet machine) and use "
        "that speed for RecBole's s/epoch and time to its best epoch",
    )
    args = parser.parse_args()

    rb = run_recbole(args)
    rb_epoch_s = [e["train_s"] + e.get("valid_s", 0.0) for e in rb["epochs"]]
    rb_best_s = sum(rb_epoch_s[: rb["best_epoch"] + 1])
    if args.time_recbole_epochs:
        timing = run_recbole(args, args.time_recbole_epochs, tag=f"_timing{args.time_recbole_epochs}")
        speed = [e["train_s"] + e.get("valid_s", 0.0) for e in timing["epochs"]]
        print(
            f"RecBole speed from a separate {len(speed)}-epoch run: {sum(speed) / len(speed):.1f} s/epoch "
            f"(full run: {sum(rb_epoch_s) / len(rb_epoch_s):.1f} s/epoch)"
        )
        rb_epoch_s = [sum(speed) / len(speed)] * len(rb_epoch_s)
        rb_best_s = rb_epoch_s[0] * (rb["best_epoch"] + 1)
    target = rb["test"]["ndcg@10"]
    ours = run_ours(args, target)
    ours_epoch_s = [e["seconds"] for e in ours["epochs"]]

    print(
        f"\n{args.dataset}, hidden {args.hidden}, seed {args.seed}; machine: {platform.machine()}, "
        f"{os.cpu_count()} vCPUs, torch threads {args.threads}"
    )
    print(
        "| implementation | s/epoch | epochs | best epoch | time to RecBole's best test NDCG@10 (s) "
        "| test NDCG@10 | test HR@10 | test NDCG@5 | test HR@5 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    t = rb["test"]
    print(
        f"| RecBole 1.2.1 SASRec | {sum(rb_epoch_s) / len(rb_epoch_s):.1f} | {len(rb_epoch_s)} | "
        f"{rb['best_epoch']} | {rb_best_s:.0f} | {t['ndcg@10']:.4f} | {t['hit@10']:.4f} | {t['ndcg@5']:.4f} | "
        f"{t['hit@5']:.4f} |"
    )
    t = ours["test"]
    reached = "not reached" if ours["reached_s"] is None else f"{ours['reached_s']:.0f}"
    print(
        f"| sicsrec Stage1Module (ID) | {sum(ours_epoch_s) / len(ours_epoch_s):.1f} | {len(ours_epoch_s)} | "
        f"{ours['best_epoch']} | {reached} | {t['test/ndcg@10']:.4f} | {t['test/hr@10']:.4f} | "
        f"{t['test/ndcg@5']:.4f} | {t['test/hr@5']:.4f} |"
    )
    if ours["reached_s"] is not None:
        print(f"speed-up to RecBole's quality: {rb_best_s / ours['reached_s']:.1f}×")


if __name__ == "__main__":
    main()
