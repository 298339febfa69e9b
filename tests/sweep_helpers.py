"""Helpers shared by the sweep tests: tiny sweep files and reading a study back."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import optuna
import yaml

# Tiny trials: few channels, a 512-image training subset and 2 % of the
# training images (1,200) for validation.
TINY_SWEEP: dict[str, Any] = {
    "model": "ae",
    "objective": {"metric": "val/loss", "direction": "minimize"},
    "n_trials": 4,
    "n_epochs": 2,
    # The reference network, so that the queued lr 1e6 trial reliably overflows.
    "fixed": {"batch_size": 128, "val_fraction": 0.02, "batch_norm": False, "scheduler": "none"},
    "search_space": {
        "n_channels": {"type": "int", "low": 2, "high": 4},
        "latent_dim": {"type": "int", "low": 2, "high": 4},
        "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
    },
    "sampler": {"type": "tpe", "seed": 0},
    "pruner": {"type": "median", "n_startup_trials": 1},
}


# What a plugin distribution's `research.sweeps` entry point may name: a mapping
# with a sweep file's keys.
PLUGIN_SWEEP: dict[str, Any] = {**TINY_SWEEP, "n_trials": 7}


def write_sweep(folder: Path, name: str = "tiny", **changes: Any) -> Path:
    """Write the tiny sweep, with top-level keys replaced by `changes`, as `folder/name.yaml`."""
    folder.mkdir(parents=True, exist_ok=True)
    values = {**TINY_SWEEP, **changes}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return path


def load_trials(storage: str, study_name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study_name, storage=storage).trials


def states(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "research.cli", *args]


def subprocess_env(workdir: Path, real_data_dir: Path) -> dict[str, str]:
    """The environment of a `research` subprocess: this checkout first, the test's stores and data."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    env["RESEARCH_CACHE_DIR"] = str(workdir / "cache")
    env["RESEARCH_DATA_DIR"] = str(real_data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env
