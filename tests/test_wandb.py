"""Runs log to Weights & Biases offline; what a dashboard will show is read back from the run folder."""

import json
import struct
import time
from pathlib import Path

import yaml

from sicsrec.cli import main
from tests.conftest import REPO


def wandb_records(path: Path):
    """The records of an offline run file (``run-*.wandb``): W&B's LevelDB-style log of protobufs
    (7-byte header, 32 KiB blocks, records split into first/middle/last pieces)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        piece, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pending = piece if kind in (1, 2) else pending + piece
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def test_a_fit_logs_offline_and_the_run_folder_holds_config_curves_and_test_metrics(tmp_path, generated, capsys):
    cfg = yaml.safe_load((REPO / "configs" / "id_generated.yaml").read_text())
    wandb = [lg for lg in cfg["trainer"]["logger"] if lg["class_path"].endswith("WandbLogger")]
    assert wandb and wandb[0]["init_args"]["offline"] is True  # shipped configs need no account
    cfg["trainer"].update(max_epochs=2, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    cfg["trainer"]["logger"][0]["init_args"]["save_dir"] = str(tmp_path / "runs")
    wandb[0]["init_args"]["save_dir"] = str(tmp_path / "runs" / "quickstart")
    cfg["data"]["init_args"].update(root=str(generated), generate_if_missing=False)
    cfg["model"]["init_args"].update(hidden_size=16, inner_size=16)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    main(["fit", "--config", str(path)])
    report = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())

    runs = list((tmp_path / "runs" / "quickstart" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    deadline = time.monotonic() + 60  # W&B's writer process may still be flushing the finished run
    while not any(r.WhichOneof("record_type") == "exit" for r in wandb_records(runs[0])):
        assert time.monotonic() < deadline, f"{runs[0]} has no exit record: the run was not finished"
        time.sleep(0.5)
    history, summary, config = [], {}, {}
    for record in wandb_records(runs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "summary":
            summary.update(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update}
            )
        elif kind == "config":
            config.update(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.config.update}
            )
    # the resolved config, as the CLI ran it, and the model's size
    assert config["config"]["model"]["init_args"]["hidden_size"] == 16
    assert config["config"]["data"]["init_args"]["root"] == str(generated)
    assert config["parameters/trainable"] > 0
    # train and validation curves: a value per logged step and per epoch
    assert sum("train/loss_step" in h for h in history) >= 2
    assert sum("valid/hr@10" in h for h in history) == 2
    # test metrics equal what metrics.json says, and the table of metrics at every K is there
    for key in ("test/hr@10", "test/ndcg@10", "test/mrr"):
        assert abs(summary[key] - report[key]) < 1e-6
    assert summary["test/metrics_at_k/_type"] == "table-file"
    assert summary["test/metrics_at_k/nrows"] == 3  # K = 5, 10, 20
