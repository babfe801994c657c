"""The three-set runs and Bili_Food's stage-2 levers (issues "Stage 2 that learns" and "New
items", docs/results.md §9) as one job list: many `sicsrec` processes side by side on one GPU,
in priority order, each stage 2 after its stage 1, each `ninerec` test after its fit. Every job
is one `sicsrec fit`/`test` line, written as the first line of runs/sweep_logs/<job>.log.

Layout it reads (an ignored folder ``.gpu/`` carried to the GPU machine, which sees only the repo):
  .gpu/ninerec/<Set>/             copies of ../shared/data/ninerec/<Set>
  .gpu/data/<name>.yaml           configs/data/<name>.yaml with ``root: .gpu/ninerec/<Set>``
  .gpu/steps/{stage1,stage2,id}.yaml   the shipped step configs without the W&B logger (no wandb
                                  there) and progress bar; stage2_ndcg.yaml: monitor valid/ndcg@10
  .gpu/features/<name>/           `sicsrec features --config configs/features_raw.yaml` output:
                                  features.json (path rewritten to this folder) + the .npy files
  .gpu/whl/                       jsonargparse, docstring-parser, typeshed-client wheels
On the machine: ``--fix_keys`` first (a features manifest names the prepared data's key, which
includes the dataset folder's absolute path), then the sweep:
  PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_sweep.py --fix_keys
  PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_sweep.py --parallel 14 --launch_until 340 --kill_at 400
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--parallel", type=int, default=12)
p.add_argument("--launch_until", type=float, default=400)
p.add_argument("--kill_at", type=float, default=470)
p.add_argument("--sets", default="bili_food,bili_dance,bili_movie")
p.add_argument("--seeds", default="2024,2025,2026")
p.add_argument("--levers", type=int, default=1)
p.add_argument("--extra", default="")  # extra flags for every fit (dry runs: epoch caps)
p.add_argument("--only", default="")  # comma list of job-name substrings
p.add_argument("--fix_keys", action="store_true")
args = p.parse_args()
if args.fix_keys:
    from sicsrec.data.prepare import prepare

    for name, folder in (("bili_food", "Bili_Food"), ("bili_dance", "Bili_Dance"), ("bili_movie", "Bili_Movie")):
        path = Path(f".gpu/features/{name}/features.json")
        manifest = json.loads(path.read_text())
        manifest["data_key"] = prepare(f".gpu/ninerec/{folder}").key
        path.write_text(json.dumps(manifest, indent=1))
    sys.exit(0)
S = ".gpu/steps"
seeds = [int(s) for s in args.seeds.split(",")]
extra = args.extra.split() if args.extra else []
jobs = []  # (priority, name, argv, deps)


def fit(name, step, data, seed, *flags, deps=(), variant=None, prio=0, sub="fit"):
    argv = [sub, "--config", f"{S}/{step}.yaml", "--dataset", f".gpu/data/{data}.yaml", "--seed_everything", str(seed)]
    argv += ["--data.init_args.features", f".gpu/features/{data}/features.json"]
    if variant:
        argv += ["--variant", variant]
    argv += list(flags) + (extra if sub == "fit" else [])
    jobs.append((prio, name, argv, tuple(deps)))


def best(data, step, version):
    return f"runs/{data}/{step}/{version}/checkpoints/best.ckpt"


NINEREC = ["--model.init_args.protocol", "ninerec", "--trainer.logger", "false"]
for data in args.sets.split(","):
    main_set = data == "bili_food"
    for seed in seeds:
        v = f"seed{seed}"
        fit(f"{data}/stage1/{v}", "stage1", data, seed, prio=0)
        fit(f"{data}/id/{v}", "id", data, seed, prio=1)
        fit(f"{data}/stage2/{v}", "stage2", data, seed, deps=[f"{data}/stage1/{v}"], prio=1)
        fit(
            f"{data}/stage2/ensemble-{v}",
            "stage2",
            data,
            seed,
            "--model.init_args.head",
            "ensemble",
            "--model.init_args.item_dropout",
            "0.5",
            "--model.init_args.optimizer.init_args.weight_decay",
            "0.0",
            variant="ensemble",
            deps=[f"{data}/stage1/{v}"],
            prio=2,
        )
        # the fit's own config.yaml (head, dropout, …) with the history masked
        for step, version, dep in (
            ("id", v, f"{data}/id/{v}"),
            ("stage2", v, f"{data}/stage2/{v}"),
            ("stage2", f"ensemble-{v}", f"{data}/stage2/ensemble-{v}"),
        ):
            jobs.append(
                (
                    3,
                    f"{data}/{step}/{version}-ninerec",
                    [
                        "test",
                        "--config",
                        f"runs/{data}/{step}/{version}/config.yaml",
                        "--ckpt_path",
                        best(data, step, version),
                        *NINEREC,
                        "--trainer.default_root_dir",
                        f"runs/{data}/{step}/{version}-ninerec",
                    ],
                    (dep,),
                )
            )
        if not (main_set and args.levers):
            continue
        s1 = [f"{data}/stage1/{v}"]
        levers = {
            "lr1e-4": ["--model.init_args.optimizer.init_args.lr", "0.0001"],
            "lr3e-4": ["--model.init_args.optimizer.init_args.lr", "0.0003"],
            "alpha0.1": ["--model.init_args.contrastive_weight", "0.1"],
            "alpha0.5": ["--model.init_args.contrastive_weight", "0.5"],
            "alpha1.0": ["--model.init_args.contrastive_weight", "1.0"],
            "cold0": ["--model.init_args.cold_neighbours", "0"],
        }
        for name, flags in levers.items():
            fit(f"{data}/stage2/{name}-{v}", "stage2", data, seed, *flags, variant=name, deps=s1, prio=4)
        fit(f"{data}/stage2/ndcg-{v}", "stage2_ndcg", data, seed, variant="ndcg", deps=s1, prio=4)
        fit(
            f"{data}/stage1/drop0-{v}",  # item dropout 0 in both stages: the default before results §13
            "stage1",
            data,
            seed,
            "--model.init_args.item_dropout",
            "0.0",
            variant="drop0",
            prio=4,
        )
        fit(
            f"{data}/stage2/drop0-{v}",
            "stage2",
            data,
            seed,
            "--model.init_args.stage1_checkpoint",
            best(data, "stage1", f"drop0-{v}"),
            variant="drop0",
            deps=[f"{data}/stage1/drop0-{v}"],
            prio=5,
        )

if args.only:
    keys = args.only.split(",")
    jobs = [j for j in jobs if any(k in j[1] for k in keys)]
order = {name: i for i, (_, name, _, _) in enumerate(sorted(jobs, key=lambda j: j[0]))}
pending = sorted(jobs, key=lambda j: (j[0], order[j[1]]))
names = {j[1] for j in jobs}
logs = Path("runs/sweep_logs")
logs.mkdir(parents=True, exist_ok=True)
env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
t0 = time.time()
running = {}
done = {}
started = {}
while pending or running:
    now = time.time() - t0
    for name, proc in list(running.items()):
        rc = proc.poll()
        if rc is not None:
            done[name] = (rc, round(time.time() - t0 - started[name], 1))
            del running[name]
            print(f"[{now:6.0f}s] done {name} rc={rc} in {done[name][1]} s", flush=True)
        elif now > args.kill_at:
            proc.kill()
            proc.wait()
            done[name] = ("killed", None)
            del running[name]
            print(f"[{now:6.0f}s] killed {name}", flush=True)
    if now > args.kill_at:
        break
    if now < args.launch_until:
        for job in list(pending):
            if len(running) >= args.parallel:
                break
            _, name, argv, deps = job
            if any(d in names and d not in done for d in deps):
                continue
            pending.remove(job)
            if any(done.get(d, (0,))[0] != 0 for d in deps if d in names):
                done[name] = ("skipped: a dependency failed", None)
                continue
            log = open(logs / (name.replace("/", "__") + ".log"), "w")
            running[name] = subprocess.Popen(
                [sys.executable, "-m", "sicsrec.cli", *argv], stdout=log, stderr=subprocess.STDOUT, env=env
            )
            started[name] = now
            log.write("sicsrec " + " ".join(argv) + "\n")
            log.flush()
            print(f"[{now:6.0f}s] start {name}", flush=True)
    elif not running:
        break
    time.sleep(0.5)
for job in pending:
    done.setdefault(job[1], ("not started", None))
Path("runs/sweep_summary.json").write_text(json.dumps(done, indent=1))
ok = sum(1 for v in done.values() if v[0] == 0)
print(f"{ok} of {len(done)} jobs finished in {time.time() - t0:.0f} s")
