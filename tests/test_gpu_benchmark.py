"""benchmarks/gpu.py must run where only torch and numpy are installed (the lent GPU machine)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

# what the GPU machine does not have: importing any of them must fail the script
ABSENT = [
    "lightning",
    "pytorch_lightning",
    "jsonargparse",
    "wandb",
    "datasets",
    "pandas",
    "torchmetrics",
    "transformers",
    "peft",
    "timm",
]


def run_gpu_benchmark(tmp_path, *args: str) -> list[dict]:
    out = tmp_path / "gpu.json"
    code = (
        "import runpy, sys\n"
        f"for name in {ABSENT!r}: sys.modules[name] = None  # import fails, as on the GPU machine\n"
        f"sys.argv = ['gpu.py', *{list(args)!r}, '--json', {str(out)!r}]\n"
        "runpy.run_path('benchmarks/gpu.py', run_name='__main__')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "s/epoch" in done.stdout
    return json.loads(out.read_text())


def test_gpu_benchmark_small_runs_without_lightning_and_learns_in_every_precision(tmp_path):
    rows = run_gpu_benchmark(tmp_path, "--small", "--precisions", "fp32,bf16", "--device", "cpu")
    assert [r["precision"] for r in rows] == ["fp32", "bf16"]
    for r in rows:
        assert r["seconds_per_epoch"] > 0 and r["targets_per_second"] > 0
        # items on a ring: both encoders must find it, far above popularity
        assert r["id_hr@10"] > 2 * r["popularity_hr@10"]
        assert r["content_hr@10"] > 2 * r["popularity_hr@10"]
    # bf16 autocast must not change what is learned beyond seed noise (800 users: σ(HR@10) ≈ 0.016)
    assert abs(rows[0]["id_hr@10"] - rows[1]["id_hr@10"]) < 0.05
    assert abs(rows[0]["content_hr@10"] - rows[1]["content_hr@10"]) < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_benchmark_small_on_cuda_with_compile(tmp_path):
    rows = run_gpu_benchmark(tmp_path, "--small", "--device", "cuda")
    assert {r["precision"] for r in rows} >= {"fp32", "bf16+compile"}
    assert all(r["peak_memory_gib"] > 0 and 0 < r["gpu_busy_share"] <= 1.0 for r in rows)
