"""The study's parent MLflow run: found again on resume, refreshed as trials finish.

The parent run contains the trials table (`trials.csv`), the best value and
parameters (metric `best/value`, tags `best.<name>`, `best_params.json`) and
Optuna's matplotlib plots under `figures/`. The study stores the parent's run
id as a user attribute, so every later start and every worker logs to the same
parent instead of creating another.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from typing import Any

from research.sweeps.storage import redact
from research.sweeps.study import PARENT_ATTR, ROLE_TAG, STUDY_TAG, SweepJob, count_states, n_finished
from research.tracking import Run, make_client

logger = logging.getLogger(__name__)

FIGURE_INTERVAL_S = 60.0  # redraw the plots at most this often while the study runs
# Plotting may take at most 1/PLOT_SHARE_LIMIT of the time between redraws: on a
# busy 2-core machine the four plots took 20-30 s, more than a small trial.
PLOT_SHARE_LIMIT = 50
PLOTS = {
    "figures/optimization_history.png": "plot_optimization_history",
    "figures/param_importances.png": "plot_param_importances",
    "figures/parallel_coordinate.png": "plot_parallel_coordinate",
    "figures/slice.png": "plot_slice",
}


def ensure_parent_run(study: Any, job: SweepJob) -> Run:
    """Reopen the study's parent run, or start one and store its id in the study."""
    client = make_client()
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id and parent_exists(client, run_id):
        logger.info("Resuming parent MLflow run %s of study '%s'", run_id, job.study_name)
        return Run.resume(run_id, client=client)

    definition = job.definition
    tags = {STUDY_TAG: job.study_name, ROLE_TAG: "parent", "research.sweep": definition.name,
            "research.model": definition.model, "research.optuna_storage": redact(job.storage),
            "research.objective": f"{definition.direction} {definition.metric}", **job.tags}
    run = Run.start(job.experiment, job.study_name, tags, client=client)
    study.set_user_attr(PARENT_ATTR, run.run_id)
    run.log_text(json.dumps({"sweep": definition.name, "source": definition.source, "model": definition.model,
                             "objective": {"metric": definition.metric, "direction": definition.direction},
                             "n_epochs": job.n_epochs, "train_size": job.train_size, "from": job.source, "fixed": dict(definition.fixed),
                             "search_space": definition.space_dict(), "sampler": dict(definition.sampler),
                             "pruner": dict(definition.pruner)}, indent=2), "sweep.json")
    logger.info("Parent MLflow run %s of study '%s' in experiment '%s'", run.run_id, job.study_name, job.experiment)
    return run


def parent_exists(client: Any, run_id: str) -> bool:
    """Tell whether the stored parent is in this tracking store (it may point at another store)."""
    try:
        client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises MlflowException or a store error for a missing run
        logger.warning("Parent MLflow run %s of the study is not in %s; starting a new parent run",
                       run_id, client.tracking_uri)
        return False
    return True


class ParentReporter:
    """Refresh the parent run after each trial: the table and best values always, plots now and then."""

    def __init__(self, run: Run, figure_interval_s: float = FIGURE_INTERVAL_S) -> None:
        self.run = run
        self.figure_interval_s = figure_interval_s
        self.next_figures = -math.inf  # time.monotonic() after which the plots are redrawn
        self.seconds = 0.0  # time spent refreshing, for the bookkeeping share

    def __call__(self, study: Any, trial: Any = None) -> None:
        self.refresh(study, figures=time.monotonic() >= self.next_figures)

    def refresh(self, study: Any, *, figures: bool) -> None:
        started = time.perf_counter()
        try:
            log_summary(self.run, study)
            if figures:
                plot_started = time.monotonic()
                log_plots(self.run, study)
                plot_seconds = time.monotonic() - plot_started
                self.next_figures = plot_started + max(self.figure_interval_s, PLOT_SHARE_LIMIT * plot_seconds)
        except Exception as error:  # noqa: BLE001 - a failed report must not stop the sweep
            logger.warning("Could not refresh parent run %s: %s", self.run.run_id, error)
        self.seconds += time.perf_counter() - started


def log_summary(run: Run, study: Any) -> None:
    """Log trial counts, the best value and parameters, and the trials table."""
    counts = count_states(study)
    step = n_finished(counts)
    metrics = {f"study/n_{state.lower()}": counts.get(state, 0) for state in ("COMPLETE", "PRUNED", "FAIL")}
    best = best_trial(study)
    if best is not None:
        metrics["best/value"] = best.value
        run.set_tags({"research.best_trial": best.number, **{f"best.{k}": v for k, v in best.params.items()}})
        run.log_text(json.dumps({"trial": best.number, "value": best.value, "params": best.params}, indent=2),
                     "best_params.json")
    run.log_metrics(metrics, step=step)
    table = study.trials_dataframe()
    if len(table):
        run.log_text(table.to_csv(index=False), "trials.csv")


def best_trial(study: Any) -> Any:
    """Return the best complete trial, or None before the first one completes."""
    try:
        return study.best_trial
    except ValueError:
        return None


def log_plots(run: Run, study: Any) -> None:
    """Log Optuna's matplotlib plots; a plot that needs more trials is skipped."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    if best_trial(study) is None:
        return
    for artifact, function in PLOTS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib plots are marked experimental
            try:
                axes = getattr(optuna_plots, function)(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as error:
                logger.debug("Skipping %s: %s", artifact, error)
                plt.close("all")
                continue
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            figure.set_size_inches(max(figure.get_figwidth(), 8), max(figure.get_figheight(), 5))
            figure.tight_layout()
        run.log_figure(figure, artifact)
