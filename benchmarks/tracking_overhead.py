"""A full tracked `research run` against the same training with tracking off."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from benchmarks.common import SIZES, Result, Timing, interleaved, ratio_text
from research.data import load
from research.runner import RunOptions, train
from research.spec import build_spec


def run(size_name: str = "full") -> Result:
    size = SIZES[size_name]
    spec = build_spec("ae", {"n_epochs": size.n_epochs, "train_size": size.train_size})
    data = load(train_size=size.train_size)
    tracking_seconds: list[float] = []
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        previous_cwd = Path.cwd()
        os.chdir(tmp)
        try:
            # The first run creates the store's tables, which a user pays once, not per run.
            train(build_spec("ae", {"n_epochs": 1, "train_size": 256}), RunOptions(quiet=True, finishers=()))

            def tracked() -> None:
                outcome = train(spec, RunOptions(quiet=True), data=data)
                tracking_seconds.append(outcome.tracking_seconds)

            samples = interleaved({"tracked": tracked,
                                   "untracked": lambda: train(spec, RunOptions(quiet=True, track=False), data=data)},
                                  size.repeats)
        finally:
            os.chdir(previous_cwd)
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous

    share = [calls / total for calls, total in zip(tracking_seconds, samples["tracked"])]
    rows = [["tracking off (`OfflineRun`)", Timing.of(samples["untracked"]).text(), "1"],
            ["MLflow on SQLite: params, per-epoch metrics, checkpoints, figures",
             Timing.of(samples["tracked"]).text(), ratio_text(samples["tracked"], samples["untracked"])]]
    return Result(
        name="tracking_overhead", title="Tracking overhead: a full run with and without MLflow",
        columns=["run", "wall time (median, range)", "ratio to untracked"], rows=rows, size=size_name,
        notes=[f"A whole `ae` run of {size.n_epochs} epoch(s) on {(size.train_size or 48_000):,} images, with "
               "test metrics and final figures on both sides. Time inside MLflow calls: "
               f"{100 * min(share):.1f}–{100 * max(share):.1f} % of the tracked run. Target: ratio ≤ 1.02."])
