"""Multi-process training and evaluation on CPU (gloo): what DDP must not change."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sicsrec.data.batching import LengthGroupedBatchSampler
from sicsrec.nn.losses import content_contrastive, info_nce
from tests.conftest import TINY_TEXT_ENCODER, one_thread

TINY = {"hidden_size": 16, "inner_size": 16, "num_layers": 1, "dropout": 0.1, "attn_dropout": 0.1}


def test_every_rank_gets_as_many_batches_and_together_they_cover_every_sample():
    batches = [np.array([i]) for i in range(7)]
    for world in (1, 2, 3, 4):
        shards = [LengthGroupedBatchSampler.shard(batches, world, r) for r in range(world)]
        assert len({len(s) for s in shards}) == 1
        assert {int(b[0]) for s in shards for b in s} == set(range(7))


def test_a_distributed_sampler_injected_by_lightning_is_refused():
    from types import SimpleNamespace

    from sicsrec.data.datamodule import SequenceDataModule, check_self_sharding
    from sicsrec.errors import ConfigError

    dm = SequenceDataModule("unused")
    for world, injects, refused in ((1, True, False), (2, False, False), (2, True, True)):
        dm.trainer = SimpleNamespace(
            world_size=world, _accelerator_connector=SimpleNamespace(use_distributed_sampler=injects)
        )
        if refused:
            with pytest.raises(ConfigError, match="use_distributed_sampler: false"):
                check_self_sharding(dm)
        else:
            check_self_sharding(dm)


# ---- (b) the gathered contrastive losses equal one process on the global batch ----------------


def _global_batch():
    g = torch.Generator().manual_seed(0)
    n, d = 9, 6
    users, content, other = (torch.randn(n, d, generator=g) for _ in range(3))
    ids = torch.tensor([3, 5, 3, 7, 1, 5, 2, 9, 3])  # duplicates within and across ranks
    weight = torch.randn(d, d, generator=g)
    return users, content, other, ids, weight


def _losses(users, content, other, ids, projection):
    """Both contrastive losses through a shared parameter (as a model's would be)."""
    u, c = projection(users), projection(content)
    a = torch.nn.functional.normalize(projection(other), dim=-1)
    b = torch.nn.functional.normalize(c, dim=-1)
    return content_contrastive(u, c, ids, 0.1) + info_nce(a, b, ids, ids, 0.1)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    users, content, other, ids, weight = _global_batch()
    part = [slice(0, 5), slice(5, 9)][rank]  # unequal shares: 5 and 4 rows
    projection = torch.nn.Linear(6, 6, bias=False)
    projection.weight.data.copy_(weight)
    x = [t[part].clone().requires_grad_(True) for t in (users, content, other)]
    loss = _losses(*x, ids[part], projection)
    loss.backward()
    # what DDP does to parameter gradients: average over ranks
    grad = projection.weight.grad.clone()
    dist.all_reduce(grad)
    grad /= world
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= world
    # an input's gradient, as a rank holds it, is the sum over ranks' losses: divide by the world
    torch.save({"loss": mean_loss, "grad": grad, "inputs": [t.grad / world for t in x]}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_contrastive_losses_and_gradients_equal_one_process(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    users, content, other, ids, weight = _global_batch()
    projection = torch.nn.Linear(6, 6, bias=False)
    projection.weight.data.copy_(weight)
    x = [t.clone().requires_grad_(True) for t in (users, content, other)]
    loss = _losses(*x, ids, projection)
    loss.backward()

    for r in ranks:
        assert torch.allclose(r["loss"], loss.detach(), atol=1e-6, rtol=0)
        assert torch.allclose(r["grad"], projection.weight.grad, atol=1e-6, rtol=0)
    for k in range(3):
        gathered = torch.cat([ranks[0]["inputs"][k], ranks[1]["inputs"][k]])
        assert torch.allclose(gathered, x[k].grad, atol=1e-6, rtol=0)
    assert projection.weight.grad.abs().sum() > 0


# ---- (a) one checkpoint, evaluated on 1 and on 2 processes ------------------------------------


def sicsrec(*args: str, cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "sicsrec.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def config(tmp_path: Path, name: str, model: dict, data: dict, devices: int) -> Path:
    trainer = {
        "accelerator": "cpu",
        "devices": devices,
        "max_epochs": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "logger": {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(tmp_path / "runs"), "name": name},
        },
        "callbacks": [
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"dirpath": str(tmp_path / name), "filename": "best"},
            }
        ],
    }
    if devices > 1:
        trainer["strategy"] = "ddp"
    cfg = {
        "seed_everything": 1,
        "trainer": trainer,
        "model": model,
        "data": {"class_path": "sicsrec.data.SequenceDataModule", "init_args": data},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_stage1_and_stage2_train_on_two_processes_and_metrics_equal_one_process(generated, features, tmp_path):
    # 600 users in 9 evaluation batches: ranks get 5 and 4 (+1 repeated) — padding must not count
    data = {"root": str(generated), "features": str(features), "max_len": 10, "batch_size": 128, "eval_batch_size": 70}
    stage1 = {"class_path": "sicsrec.modules.Stage1Module", "init_args": {**TINY, "use_content": True}}
    sicsrec("fit", "--config", str(config(tmp_path, "s1", stage1, data, 2)), "--test_after_fit", "false", cwd=tmp_path)
    stage2 = {
        "class_path": "sicsrec.modules.Stage2Module",
        "init_args": {
            "stage1_checkpoint": str(tmp_path / "s1" / "best.ckpt"),
            "decoder_dropout": 0.1,
            "decoder_attn_dropout": 0.1,
        },
    }
    # trained on two processes, then its best checkpoint tested on the same two (after fit)
    sicsrec("fit", "--config", str(config(tmp_path, "s2", stage2, data, 2)), cwd=tmp_path)

    from sicsrec.cli import main

    def run(devices, *args):  # one process: here; two: in their own processes, as a cluster runs them
        if devices == 2:
            return sicsrec(*args, cwd=tmp_path)
        with one_thread():  # as the subprocesses (OMP_NUM_THREADS=1): the same arithmetic
            main(list(args))

    run(
        1,
        "test",
        "--config",
        str(config(tmp_path, "test1", stage2, data, 1)),
        "--ckpt_path",
        str(tmp_path / "s2" / "best.ckpt"),
    )
    results = {}
    for devices, name in ((1, "test1"), (2, "s2")):
        found = list((tmp_path / "runs" / name).glob("version_*/metrics.json"))
        assert len(found) == 1
        report = json.loads(found[0].read_text())
        results[devices] = {k: v for k, v in report.items() if k.startswith("test/")}
    assert report["best_checkpoint"] == str(tmp_path / "s2" / "best.ckpt")
    assert set(results[1]) >= {"test/hr@10", "test/ndcg@10", "test/mrr"}
    assert results[1] == results[2]  # exactly: every user counted once, none twice

    predictions = {}
    for devices in (1, 2):
        out = tmp_path / f"pred{devices}.jsonl"
        run(
            devices,
            "predict",
            "--config",
            str(config(tmp_path, f"predict{devices}", stage2, data, devices)),
            "--ckpt_path",
            str(tmp_path / "s2" / "best.ckpt"),
            "--predictions.path",
            str(out),
        )
        predictions[devices] = out.read_text().splitlines()
    assert len(predictions[1]) == 600  # one row per user, none repeated by the padding
    assert predictions[1] == predictions[2]


@pytest.mark.slow
def test_alignment_trains_on_two_processes(generated, tmp_path):
    from sicsrec.content.judges import EmbeddingJudge
    from sicsrec.content.pairs import construct_pairs
    from sicsrec.data import prepare

    construct_pairs(prepare(generated), EmbeddingJudge(), tmp_path / "pairs", progress=False)
    text = {"class_path": "sicsrec.content.encoders.TextEncoder", "init_args": TINY_TEXT_ENCODER}
    image = {
        "class_path": "sicsrec.content.encoders.ImageEncoder",
        "init_args": {"model": "test_efficientnet", "weights": None, "random_init": True, "image_size": 32},
    }
    path = config(
        tmp_path,
        "align",
        {
            "class_path": "sicsrec.modules.align.AlignModule",
            "init_args": {"text": text, "image": image, "trainable": "all"},
        },
        {},
        2,
    )
    cfg = yaml.safe_load(path.read_text())
    cfg["data"] = {
        "class_path": "sicsrec.data.datamodule.AlignDataModule",
        "init_args": {"root": str(generated), "pairs": str(tmp_path / "pairs" / "pairs.jsonl"), "batch_size": 32},
    }
    cfg["trainer"]["callbacks"][0]["init_args"]["monitor"] = "valid/t2i_recall@10"
    path.write_text(yaml.safe_dump(cfg))
    sicsrec("fit", "--config", str(path), cwd=tmp_path)
    assert (tmp_path / "align" / "best.ckpt").is_file()
    import csv

    from sicsrec.data.datamodule import AlignDataModule

    rows = list(csv.DictReader(open(tmp_path / "runs" / "align" / "version_0" / "metrics.csv")))
    # each rank trained on its half of the pairs: half as many steps as one process takes
    dm = AlignDataModule(str(generated), str(tmp_path / "pairs" / "pairs.jsonl"), batch_size=32, seed=1)
    # the recall logged under DDP is the saved model's, recomputed here on one process
    import lightning as L

    from sicsrec.modules.align import AlignModule

    model = AlignModule.load_from_checkpoint(tmp_path / "align" / "best.ckpt", weights_only=True)
    again = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).validate(
        model,
        AlignDataModule(str(generated), str(tmp_path / "pairs" / "pairs.jsonl"), batch_size=32, seed=1),
        verbose=False,
    )[0]
    assert float(rows[-1]["valid/t2i_recall@10"]) == pytest.approx(again["valid/t2i_recall@10"], abs=1e-6)
    dm.setup("fit")
    per_rank = -(-len(dm.train_pairs) // 2)
    assert int(rows[-1]["step"]) + 1 == per_rank // 32  # the step column counts from 0
