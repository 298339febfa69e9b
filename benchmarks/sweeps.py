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

from benchmarks.common import Result

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


# (trials, epochs per trial, training images, trials before the pruner starts) per size.
SWEEP_SIZES = {"full": (16, 5, 4096, 4), "quick": (6, 3, 1024, 2), "tiny": (2, 2, 256, 1)}
VARIANTS = ("pruned", "unpruned", "workers2")


def run_variants(out: Path, args: argparse.Namespace, names: Any = VARIANTS) -> dict[str, dict]:
    reference = yaml.safe_load((REPOSITORY / "sweeps" / "ae-reference.yaml").read_text())["pruner"]
    # `workers2` is the unpruned sweep again with two workers, to compare with `unpruned`.
    variants = {"pruned": ({**reference, "n_startup_trials": args.n_startup_trials}, 1),
                "unpruned": ({"type": "none"}, 1), "workers2": ({"type": "none"}, 2)}
    results = {}
    for name in names:
        pruner, workers = variants[name]
        write_variant(out / name / "sweeps", name, args.epochs, pruner)
        results[name] = run_sweep(out / name, name, args, args.n_trials, workers)
    return results


def run(size_name: str = "full") -> Result:
    """Run the three variants at a benchmark size and return their table."""
    import tempfile

    n_trials, epochs, train_size, startup = SWEEP_SIZES[size_name]
    args = argparse.Namespace(n_trials=n_trials, epochs=epochs, train_size=train_size, n_startup_trials=startup)
    with tempfile.TemporaryDirectory(prefix="bench-sweeps-") as tmp:
        results = run_variants(Path(tmp), args)
    rows = []
    for name, result in results.items():
        bookkeeping = (result["mlflow_s"] + result["parent_s"]) / result["wall_s"]
        rows.append([name, f"{result['wall_s']:.1f} s", str(result["epochs"]), str(result["n_pruned"]),
                     f"{result['best']:.5f}", f"{100 * result['epoch_s'] / result['wall_s']:.0f} %",
                     f"{100 * bookkeeping:.1f} %"])
    pruned, unpruned = results["pruned"], results["unpruned"]
    saved = 1 - pruned["epochs"] / unpruned["epochs"]
    best_change = pruned["best"] / unpruned["best"] - 1
    speedup = unpruned["wall_s"] / results["workers2"]["wall_s"]
    return Result(
        name="sweeps", title="Sweeps: pruning, bookkeeping and workers",
        columns=["sweep", "wall time", "epochs trained", "pruned trials", "best val/loss", "time in epochs",
                 "MLflow + parent-run share"], rows=rows, size=size_name,
        notes=[f"A shortened `ae-reference`: {n_trials} trials of {epochs} epochs on {train_size:,} training "
               f"images, validation on 5 % of the training set, the pruner starting after {startup} trials. "
               f"Pruning trained {100 * saved:.0f} % fewer epochs (target ≥ 40 %) and changed the best "
               f"validation loss by {100 * best_change:+.1f} % (target within 5 %). With two workers on 2 cores "
               f"the unpruned sweep ran {speedup:.2f} times as fast as with one. The share column counts MLflow calls of the trial runs "
               "and the parent run's refreshes (target ≤ 2 %)."])


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

    results = run_variants(args.out, args, args.sweeps)

    print("| sweep | wall s | epochs | pruned | best val/loss | epoch time s | MLflow s (complete trials) "
          "| parent refresh s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, result in results.items():
        print(f"| {name} | {result['wall_s']:.1f} | {result['epochs']} | {result['n_pruned']} | "
              f"{result['best']:.5f} | {result['epoch_s']:.1f} | {result['mlflow_s']:.1f} | {result['parent_s']:.1f} |")


if __name__ == "__main__":
    main()
