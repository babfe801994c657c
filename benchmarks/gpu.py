"""Stage-1 training speed on one GPU: fp32 vs bf16 vs bf16 + torch.compile.

    PYTHONPATH=. python benchmarks/gpu.py [--data DIR] [--epochs 10] [--json OUT]
    PYTHONPATH=. python benchmarks/gpu.py --small            # CPU, seconds: what the test runs
    .venv/bin/python benchmarks/gpu.py --export DIR          # here: Bili_Movie → DIR/Bili_Movie.npz

Runs on the lent GPU machine as it is: imports torch, numpy and sicsrec's plain modules only
(``sicsrec.nn``, ``sicsrec.data.batching``, ``sicsrec.ranking``) — no Lightning, jsonargparse,
wandb, datasets or pandas. The device cannot see ``../shared``: ``--export`` writes Bili_Movie's
prepared sequences into an ignored folder to carry there.

Datasets: Bili_Movie (from ``--data``, if exported) and a generated set of Bili_Cartoon's size
(30,000 users, 4,725 items, ~215k interactions; items on a ring, users walk it with small steps,
so there is something to learn). Model: SICSRec's stage 1 at its defaults (hidden 256, 2 layers,
2 heads, max_len 50, dropout 0.5, 1,024 targets per batch, Adam 1e-3): ID encoder + content
encoder (384-d item features: random vectors, as speed does not depend on them) trained with
``sicsrec.objectives.stage1_objective``, the objective the Lightning module trains with; batches
from the DataModule's own length-grouped sampler over samples padded once into arrays (a batch is
a slice), pinned and copied asynchronously.

Per dataset × precision it prints: seconds per epoch (mean over the epochs after the first,
which holds compilation), training targets per second, peak GPU memory, the share of wall time
the GPU is busy (kernel time from torch.profiler over one epoch), the share spent waiting for
batches, and test HR@10 / NDCG@10 of both encoders after the run (leave-one-out, full ranking).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from sicsrec.data.batching import LengthGroupedBatchSampler, TrainingBatches, as_batch, pad, training_samples
from sicsrec.nn.content_encoder import ContentEncoder
from sicsrec.nn.id_encoder import IDEncoder
from sicsrec.nn.losses import item_scores
from sicsrec.objectives import stage1_objective
from sicsrec.ranking import metrics_from_ranks, target_ranks

PRECISIONS = ("fp32", "bf16", "bf16+compile")
FEATURE_DIM = 384  # MiniLM's


# ---- data ------------------------------------------------------------------------------------


def generated_sequences(users: int, items: int, mean_len: float, seed: int) -> list[np.ndarray]:
    """Users walk a ring of items with small random steps (+ a few random jumps)."""
    rng = np.random.default_rng(seed)
    lengths = 4 + rng.geometric(1 / (mean_len - 3), size=users)
    seqs = []
    for n in lengths:
        steps = rng.integers(1, 4, size=n)
        jumps = rng.random(n) < 0.1
        steps[jumps] = rng.integers(0, items, size=int(jumps.sum()))
        seqs.append(1 + (rng.integers(0, items) + np.cumsum(steps)) % items)
    return seqs


def load_exported(path: Path) -> list[np.ndarray]:
    data = np.load(path)
    return np.split(data["items"], data["offsets"][1:-1])


def export_movie(out: Path, root: Path) -> None:
    from sicsrec.data import prepare  # the full install: pandas, the readers

    data = prepare(root)
    seqs = [data.sequence(u) for u in range(data.num_users)]
    out.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    np.savez_compressed(out / "Bili_Movie.npz", items=np.concatenate(seqs), offsets=offsets, num_items=data.num_items)
    print(f"{out / 'Bili_Movie.npz'}: {data.num_users:,} users, {data.num_items:,} items, {offsets[-1]:,} interactions")


# ---- one run ---------------------------------------------------------------------------------


def train_and_test(seqs: list[np.ndarray], num_items: int, precision: str, args, device: torch.device) -> dict:
    torch.manual_seed(args.seed)
    shape = dict(
        hidden_size=args.hidden,
        inner_size=args.hidden,
        num_layers=2,
        num_heads=2,
        dropout=0.5,
        attn_dropout=0.5,
        max_len=args.max_len,
    )
    id_encoder = IDEncoder(num_items, **shape).to(device)
    content_encoder = ContentEncoder({"text": FEATURE_DIM}, **shape).to(device)
    features = torch.randn(num_items + 1, FEATURE_DIM, generator=torch.Generator().manual_seed(0)).to(device)
    present = torch.ones(num_items + 1, dtype=torch.bool, device=device)
    params = list(id_encoder.parameters()) + list(content_encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    if precision.endswith("compile"):
        id_encoder.compile(dynamic=True)
        content_encoder.compile(dynamic=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.startswith("bf16"))

    samples = training_samples([s[:-2] for s in seqs], args.max_len)
    dataset = TrainingBatches(samples)
    sampler = LengthGroupedBatchSampler(dataset.lengths, args.batch_size, True, args.seed, dataset.sizes)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=as_batch,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )
    targets_per_epoch = int(dataset.sizes.sum())
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def epoch(profile: bool = False) -> tuple[float, float, float]:
        id_encoder.train(), content_encoder.train()
        waited, busy = 0.0, float("nan")
        if cuda:
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        prof = None
        if profile and cuda:
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
            prof.__enter__()
        it = iter(loader)
        while True:
            t0 = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                break
            x, y = batch["input"].to(device, non_blocking=True), batch["target"].to(device, non_blocking=True)
            waited += time.perf_counter() - t0
            with autocast:
                table = content_encoder.item_vectors({"text": features}, {"text": present})
                id_states, content_states = id_encoder(x), content_encoder(x, table)
                loss = stage1_objective(y, id_states, id_encoder.item_embedding.weight, content_states, table)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if cuda:
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - started
        if prof is not None:
            prof.__exit__(None, None, None)
            kernel_us = sum(
                getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) for e in prof.key_averages()
            )
            busy = kernel_us / 1e6 / wall
        return wall, waited / wall, busy

    times, waits, busy = [], [], float("nan")
    for e in range(args.epochs):
        profile = cuda and e == args.epochs - 1 and args.epochs > 1
        wall, wait, b = epoch(profile)
        if profile:
            busy = b  # the profiled epoch's time is not counted (the profiler slows it)
        else:
            times.append(wall)
            waits.append(wait)
    measured = times[1:] or times
    seconds = float(np.mean(measured))

    # test: leave-one-out, full ranking, both encoders
    id_encoder.eval(), content_encoder.eval()
    ranks = {"id": [], "content": []}
    with torch.no_grad(), autocast:
        table = content_encoder.item_vectors({"text": features}, {"text": present})
        for start in range(0, len(seqs), 2048):
            part = seqs[start : start + 2048]
            x = pad([s[:-1][-args.max_len :] for s in part]).to(device)
            y = torch.tensor([int(s[-1]) for s in part], device=device)
            id_user = id_encoder(x, last_only=True)
            ranks["id"].append(target_ranks(item_scores(id_user, id_encoder.item_embedding.weight), y))
            content_user = content_encoder(x, table, last_only=True)
            ranks["content"].append(target_ranks(item_scores(content_user, table, "cosine", 0.05), y))
    out = {
        "precision": precision,
        "seconds_per_epoch": seconds,
        "targets_per_second": targets_per_epoch / seconds,
        "loader_share": float(np.mean(waits[1:] or waits)),
        "gpu_busy_share": busy,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan"),
        "epochs": args.epochs,
        "batches_per_epoch": len(sampler),
    }
    for view, r in ranks.items():
        m = metrics_from_ranks(torch.cat(r).cpu())
        out[f"{view}_hr@10"], out[f"{view}_ndcg@10"] = m["hr@10"], m["ndcg@10"]
    pop = np.bincount(np.concatenate([s[:-1] for s in seqs]), minlength=num_items + 1).astype(np.float32)
    pop[0] = -np.inf
    pop_scores = torch.from_numpy(pop).expand(len(seqs), -1)
    pop_ranks = target_ranks(pop_scores, torch.tensor([int(s[-1]) for s in seqs]))
    out["popularity_hr@10"] = metrics_from_ranks(pop_ranks)["hr@10"]
    return out


# ---- main ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a tiny generated set, 2 epochs (CPU test)")
    parser.add_argument("--data", default="runs/gpu_data", help="folder with an exported Bili_Movie.npz")
    parser.add_argument("--export", help="write Bili_Movie.npz to this folder and exit (needs the full install)")
    parser.add_argument(
        "--movie-root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ninerec" / "Bili_Movie")
    )
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.export:
        export_movie(Path(args.export), Path(args.movie_root))
        return
    device = torch.device(args.device)
    if args.small:
        args.epochs, args.hidden, args.workers = min(args.epochs, 3), 32, 0
        datasets = {"generated-small": (generated_sequences(800, 200, 8.0, 1), 200)}
    else:
        datasets = {}
        movie = Path(args.data) / "Bili_Movie.npz"
        if movie.is_file():
            datasets["Bili_Movie"] = (load_exported(movie), int(np.load(movie)["num_items"]))
        else:
            print(f"Bili_Movie skipped: {movie} not found (export it with --export {args.data})")
        datasets["Cartoon-sized (generated)"] = (generated_sequences(30_000, 4_725, 7.2, 1), 4_725)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"device: {name}; torch {torch.__version__}; {args.epochs} epochs; hidden {args.hidden}")
    rows = []
    for data_name, (seqs, num_items) in datasets.items():
        print(f"{data_name}: {len(seqs):,} users, {num_items:,} items, {sum(map(len, seqs)):,} interactions")
        for precision in args.precisions.split(","):
            if precision.startswith("bf16") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
                print(f"  {precision}: skipped (no bf16 on this GPU)")
                continue
            row = {"dataset": data_name, "device": name, **train_and_test(seqs, num_items, precision, args, device)}
            rows.append(row)
    header = (
        f"{'dataset':<26} {'precision':<13} {'s/epoch':>8} {'targets/s':>10} {'peak GiB':>9} {'GPU busy':>9} "
        f"{'loader':>7} {'ID HR@10':>9} {'ID NDCG@10':>11} {'content HR@10':>14} {'pop HR@10':>10}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['dataset']:<26} {r['precision']:<13} {r['seconds_per_epoch']:8.3f} {r['targets_per_second']:10,.0f} "
            f"{r['peak_memory_gib']:9.2f} {r['gpu_busy_share']:9.0%} {r['loader_share']:7.0%} "
            f"{100 * r['id_hr@10']:9.2f} {100 * r['id_ndcg@10']:11.2f} {100 * r['content_hr@10']:14.2f} "
            f"{100 * r['popularity_hr@10']:10.2f}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
