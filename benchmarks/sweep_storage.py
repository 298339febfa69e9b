"""Measure Optuna storages under several processes: errors ("database is locked") and wall time.

    python benchmarks/sweep_storage.py sqlite-default 4 40 --out /tmp/storage-bench

Each of N spawned processes runs M trials of a trivial objective (5 reported
steps and a user attribute per trial) on one study. Kinds: `sqlite-default`
(the driver's 5 s lock wait), `sqlite-timeout60` (60 s wait and heartbeats, as
`research` opens SQLite) and `journal` (JournalStorage with a file backend).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path
from typing import Any

import optuna

KINDS = ("sqlite-default", "sqlite-timeout60", "journal")


def open_storage(kind: str, path: Path) -> Any:
    if kind == "sqlite-default":
        return optuna.storages.RDBStorage(f"sqlite:///{path}.db")
    if kind == "sqlite-timeout60":
        return optuna.storages.RDBStorage(f"sqlite:///{path}.db", engine_kwargs={"connect_args": {"timeout": 60}},
                                          heartbeat_interval=1, grace_period=3)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(f"{path}.journal"))


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0, 1)
    trial.set_user_attr("run", "abc")
    for step in range(5):
        trial.report(x * step, step)
    return x


def work(kind: str, path: Path, n_trials: int, errors: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="bench", storage=open_storage(kind, path))
    for _ in range(n_trials):
        try:
            study.optimize(objective, n_trials=1)
        except Exception:  # noqa: BLE001 - every failure is what this script counts
            with errors.get_lock():
                errors.value += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("n_processes", type=int)
    parser.add_argument("n_trials", type=int, help="trials per process")
    parser.add_argument("--out", type=Path, required=True, help="folder for the storage files")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.kind}-{args.n_processes}-{time.time_ns()}"
    optuna.create_study(study_name="bench", storage=open_storage(args.kind, path))
    context = multiprocessing.get_context("spawn")
    errors = context.Value("i", 0)
    started = time.perf_counter()
    processes = [context.Process(target=work, args=(args.kind, path, args.n_trials, errors))
                 for _ in range(args.n_processes)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    n_trials = len(optuna.load_study(study_name="bench", storage=open_storage(args.kind, path)).trials)
    print(f"{args.kind}: {args.n_processes} processes, {n_trials} trials, {errors.value} errors, "
          f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
