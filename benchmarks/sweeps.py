"""Measure sweeps: pruning against no pruning, the bookkeeping share, and 1 against 2 workers.

    python benchmarks/sweeps.py --n-trials 6 --epochs 3 --train-size 512 --out /tmp/sweep-bench

Runs shortened variants of `sweeps/ae-reference.yaml` through the `research`
command in subprocesses. The variants keep the search space, sampler and pruner
type, but have fewer epochs and trials, train on a subset and validate on 5 % of
the training images. The pruner starts after `--n-startup-trials` trials. Each
sweep runs in its own folder with its own Optuna and MLflow SQLite files, and the
script prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import yaml

REPOSITORY = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"training epochs ([\d.]+) s, everything else ([\d.]+) % \(MLflow calls of complete "
                     r"trial runs ([\d.]+) s, parent run refreshes ([\d.]+) s\)")


def write_variant(folder: Path, name: str, n_epochs: int, pruner: dict[str, Any] | None) -> None:
    values = yaml.safe_load((REPOSITORY / "sweeps" / "ae-reference.yaml").read_text())
    values["n_epochs"] = n_epochs
    values["fixed"] = {**values.get("fixed", {}), "val_fraction": 0.05}
    if pruner is not None:
        values["pruner"] = pruner
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(values, sort_keys=False))


def run_sweep(folder: Path, name: str, args: argparse.Namespace, n_trials: int, workers: int = 1) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
           "RESEARCH_CACHE_DIR": str(folder / "cache")}
    command = [sys.executable, "-m", "research.cli", "sweep", "run", name, "--n-trials", str(n_trials),
               "--train-size", str(args.train_size), "--workers", str(workers), "--device", "cpu"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}").trials
    sums = [tuple(float(value) for value in match) for match in SUMMARY.findall(done.stderr)]
    return {"wall_s": wall, "epochs": sum(len(trial.intermediate_values) for trial in trials),
            "best": min(trial.value for trial in trials if trial.state.name == "COMPLETE"),
            "n_pruned": sum(trial.state.name == "PRUNED" for trial in trials),
            "epoch_s": sum(item[0] for item in sums), "mlflow_s": sum(item[2] for item in sums),
            "parent_s": sum(item[3] for item in sums)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=2048)
    parser.add_argument("--n-startup-trials", type=int, default=2,
                        help="trials before the pruner starts (the shipped sweep waits for 5 of 100)")
    parser.add_argument("--sweeps", nargs="+", default=["pruned", "unpruned", "workers2"],
                        choices=["pruned", "unpruned", "workers2"], help="which variants to run")
    parser.add_argument("--out", type=Path, required=True, help="an empty folder for the stores")
    args = parser.parse_args()

    reference = yaml.safe_load((REPOSITORY / "sweeps" / "ae-reference.yaml").read_text())["pruner"]
    # `workers2` is the unpruned sweep again with two workers, to compare with `unpruned`.
    variants = {"pruned": ({**reference, "n_startup_trials": args.n_startup_trials}, 1),
                "unpruned": ({"type": "none"}, 1), "workers2": ({"type": "none"}, 2)}
    results = {}
    for name in args.sweeps:
        pruner, workers = variants[name]
        write_variant(args.out / name / "sweeps", name, args.epochs, pruner)
        results[name] = run_sweep(args.out / name, name, args, args.n_trials, workers)

    print("| sweep | wall s | epochs | pruned | best val/loss | epoch time s | MLflow s (complete trials) "
          "| parent refresh s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, result in results.items():
        print(f"| {name} | {result['wall_s']:.1f} | {result['epochs']} | {result['n_pruned']} | "
              f"{result['best']:.5f} | {result['epoch_s']:.1f} | {result['mlflow_s']:.1f} | {result['parent_s']:.1f} |")


if __name__ == "__main__":
    main()
