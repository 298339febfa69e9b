"""Run the trials of a study: each one a nested, tracked training with pruning.

Every worker, in this process or in a spawned one, loops: count the study's
finished (complete + pruned) trials, stop at the target, wait while the trials
running elsewhere can reach it, else run one trial. A trial that raises a
project error or hits a non-finite loss ends FAIL and the loop goes on.

A pruned trial's MLflow run ends KILLED with the tag `research.trial_state=PRUNED`:
it was stopped before its planned epochs, and KILLED keeps it apart from
trials that trained to the end. Every trial run carries `research.trial_state`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from research.errors import ResearchError, TrainingInterrupted
from research.sweeps.parent import ParentReporter, ensure_parent_run
from research.sweeps.study import (
    ROLE_TAG,
    RUN_ATTR,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    SweepJob,
    build_sampler,
    count_states,
    n_finished,
    open_study,
)
from research.tracking import Run, make_client

logger = logging.getLogger(__name__)

WAIT_POLL_S = 2.0  # how often a worker looks again while others finish the last trials
END_REASON_TAG = "research.end_reason"


class TrialFailed(Exception):
    """A trial's training raised a project error; Optuna records the trial as FAIL."""


class TargetReached(Exception):
    """Other workers already run enough trials to reach the target; this trial is not needed."""


@dataclass
class SessionTimes:
    """Time spent by one worker, split into training epochs and the rest (bookkeeping)."""

    started: float = field(default_factory=time.perf_counter)
    epoch_seconds: float = 0.0
    n_epochs: int = 0
    n_trials: int = 0
    tracking_seconds: float = 0.0  # MLflow calls of the trial runs that completed

    def summary(self, reporter_seconds: float) -> str:
        total = time.perf_counter() - self.started
        share = 100 * (total - self.epoch_seconds) / total if total else 0.0
        return (f"{self.n_trials} trials, {self.n_epochs} epochs in {total:.1f} s: training epochs "
                f"{self.epoch_seconds:.1f} s, everything else {share:.1f} % (MLflow calls of complete "
                f"trial runs {self.tracking_seconds:.1f} s, parent run refreshes {reporter_seconds:.1f} s)")


class PruningCallback:
    """Report the objective to Optuna after each epoch and stop the trial when the pruner decides to."""

    def __init__(self, trial: Any, metric: str, times: SessionTimes, on_first_epoch: Callable[[], None]) -> None:
        self.trial = trial
        self.metric = metric
        self.times = times
        self.on_first_epoch: Callable[[], None] | None = on_first_epoch
        self.warned = False

    def __call__(self, epoch: int, record: Mapping[str, float]) -> None:
        import optuna

        if self.on_first_epoch is not None:
            self.on_first_epoch()
            self.on_first_epoch = None
        self.times.n_epochs += 1
        self.times.epoch_seconds += float(record.get("epoch_time_s", 0.0))
        value = record.get(self.metric)
        if value is None:
            if not self.warned:
                logger.warning("Metric %s is not logged per epoch, so trial %d cannot be pruned",
                               self.metric, self.trial.number)
                self.warned = True
            return
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.metric} {value:.4g}")


class Objective:
    """Train one trial of `job` as a child run of the study's parent run."""

    def __init__(self, job: SweepJob, study: Any, times: SessionTimes) -> None:
        self.job = job
        self.study = study
        self.times = times
        self.client = make_client()
        self.datasets: dict[tuple[Any, ...], Any] = {}

    def __call__(self, trial: Any) -> float:
        import optuna

        self.check_target(trial)
        # The trial's parameters are drawn by the suggestions below, from this sampler.
        self.study.sampler = build_sampler(self.job.definition, trial.number)
        params = {param.name: param.suggest(trial) for param in self.job.definition.space}
        self.times.n_trials += 1
        try:
            return self.train(trial, params)
        except optuna.TrialPruned:
            self.mark_run(trial, "KILLED", "PRUNED")
            raise
        except TrainingInterrupted:
            self.mark_run(trial, None, "FAIL")
            raise
        except ResearchError as error:
            logger.warning("Trial %d failed: %s", trial.number, error)
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}"[:1000])
            self.mark_run(trial, None, "FAIL")
            raise TrialFailed(str(error)) from error

    def check_target(self, trial: Any) -> None:
        """Raise `TargetReached` when finished trials plus earlier running ones already make the target."""
        trials = self.study.get_trials(deepcopy=False)
        finished = sum(1 for other in trials if other.state.name in ("COMPLETE", "PRUNED"))
        ahead = sum(1 for other in trials if other.state.name == "RUNNING" and other.number < trial.number)
        if finished + ahead >= self.job.n_trials:
            trial.set_user_attr("surplus", True)
            raise TargetReached(f"{finished} finished and {ahead} running trials reach the target "
                                f"of {self.job.n_trials}")

    def train(self, trial: Any, params: dict[str, Any]) -> float:
        from research.runner import RunOptions, train
        from research.spec import build_spec

        job = self.job
        overrides: dict[str, Any] = {**job.definition.fixed, **job.source_overrides, **params,
                                     "n_epochs": job.n_epochs}
        if job.train_size is not None:
            overrides["train_size"] = job.train_size
        spec = build_spec(job.definition.model, overrides, seed=job.seed)
        tags = {STUDY_TAG: job.study_name, TRIAL_TAG: str(trial.number), ROLE_TAG: "trial",
                "research.sweep": job.definition.name, **job.tags}
        options = RunOptions(experiment=job.experiment, run_name=f"trial-{trial.number:04d}", device=job.device,
                             data_dir=job.data_dir, quiet=True, tags=tags, parent_run_id=job.parent_run_id,
                             callbacks=[PruningCallback(trial, job.definition.metric, self.times,
                                                        lambda: self.link_run(trial))], finishers=[])
        outcome = train(spec, options, data=self.dataset(spec))
        self.times.tracking_seconds += outcome.tracking_seconds
        trial.set_user_attr(RUN_ATTR, outcome.run_id)
        value = objective_value(job.definition.metric, job.definition.direction, outcome)
        self.client.set_tag(outcome.run_id, STATE_TAG, "COMPLETE" if math.isfinite(value) else "FAIL")
        return value

    def dataset(self, spec: Any) -> Any:
        """Load the data split once per worker; trials differ in hyperparameters, not in data."""
        from research.runner import load_data

        key = (spec.data.val_fraction, spec.data.split_seed, spec.data.train_size)
        if key not in self.datasets:
            self.datasets[key] = load_data(spec, self.job.data_dir)
        return self.datasets[key]

    def link_run(self, trial: Any) -> None:
        """Store the running trial's MLflow run id, so the trial links to its run even if its worker dies."""
        run = find_trial_run(self.client, self.job, trial.number)
        if run is not None:
            trial.set_user_attr(RUN_ATTR, run.info.run_id)

    def mark_run(self, trial: Any, status: str | None, state: str) -> None:
        """Link a trial that did not complete to its run and record its state there."""
        from research.runner import local_checkpoint_dir

        run = find_trial_run(self.client, self.job, trial.number)
        if run is None:
            return
        trial.set_user_attr(RUN_ATTR, run.info.run_id)
        self.client.set_tag(run.info.run_id, STATE_TAG, state)
        if status is not None:
            self.client.set_terminated(run.info.run_id, status=status)
            self.client.set_tag(run.info.run_id, END_REASON_TAG, f"Optuna pruned trial {trial.number}")
            shutil.rmtree(local_checkpoint_dir(run.info.run_id), ignore_errors=True)


def objective_value(metric: str, direction: str, outcome: Any) -> float:
    """Return the metric at the run's best epoch, else from the test metrics."""
    history = outcome.fit.history
    values = [record[metric] for record in history if metric in record]
    if values:
        best_epoch = outcome.fit.state.best_epoch
        at_best = [record[metric] for record in history if record.get("epoch") == best_epoch and metric in record]
        if at_best:
            return float(at_best[0])
        return float(min(values) if direction == "minimize" else max(values))
    if metric in outcome.test_metrics:
        return float(outcome.test_metrics[metric])
    raise ResearchError(f"the objective metric {metric!r} was not logged by the trial; the sweep file's "
                        f"objective.metric must be a per-epoch metric (val/loss) or a test metric (test/mse)")


def find_trial_run(client: Any, job: SweepJob, number: int) -> Any:
    """Return the MLflow run of trial `number` of the job's study, or None."""
    experiment = client.get_experiment_by_name(job.experiment)
    if experiment is None:
        return None
    query = (f"tags.`{STUDY_TAG}` = '{job.study_name}' and tags.`{TRIAL_TAG}` = '{number}' "
             f"and tags.`mlflow.parentRunId` = '{job.parent_run_id}'")
    runs = client.search_runs([experiment.experiment_id], filter_string=query,
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def recover_stale_trials(study: Any, job: SweepJob) -> int:
    """Mark trials of dead workers FAIL, re-queue their parameters once, and end their runs FAILED."""
    import optuna

    before = {trial.number for trial in study.get_trials(deepcopy=False) if trial.state.name == "FAIL"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = [trial for trial in study.get_trials(deepcopy=False) if trial.state.name == "FAIL"]
    stale = [trial for trial in failed if trial.number not in before]
    if stale:
        numbers = ", ".join(str(trial.number) for trial in stale)
        logger.warning("Marked %d stale trial(s) FAIL (no heartbeat for %d s): %s; their parameters are queued "
                       "again once", len(stale), 3 * job.heartbeat_s, numbers)
    end_runs_of_failed_trials(failed, job)
    return len(stale)


def end_runs_of_failed_trials(failed: list[Any], job: SweepJob) -> None:
    """End FAILED the MLflow runs that failed trials left RUNNING.

    Optuna also marks stale trials FAIL on its own when a worker starts a trial,
    without ending their runs, so every failed trial is checked once per worker.
    """
    unchecked = [trial for trial in failed if trial.number not in job.checked_failures]
    if not unchecked or not job.parent_run_id:
        return
    client = make_client()
    for trial in unchecked:
        run = find_trial_run(client, job, trial.number)
        if run is not None and run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, STATE_TAG, "FAIL")
            client.set_tag(run.info.run_id, END_REASON_TAG, "its worker stopped sending heartbeats")
            client.set_terminated(run.info.run_id, status="FAILED")
            logger.warning("Ended MLflow run %s of failed trial %d FAILED: its worker stopped", run.info.run_id,
                           trial.number)
        job.checked_failures.add(trial.number)


def run_worker(job: SweepJob) -> SessionTimes:
    """Run trials of `job`'s study until it has `job.n_trials` finished trials or time is up."""

    study = open_study(job, create=False)
    reporter = ParentReporter(Run.resume(job.parent_run_id, client=make_client()))
    times = SessionTimes()
    objective = Objective(job, study, times)
    deadline = time.monotonic() + job.timeout_s if job.timeout_s else math.inf
    while time.monotonic() < deadline:
        counts = count_states(study)
        if n_finished(counts) >= job.n_trials:
            break
        if n_finished(counts) + counts.get("RUNNING", 0) >= job.n_trials:
            recover_stale_trials(study, job)
            time.sleep(WAIT_POLL_S)
            continue
        # Before Optuna's own check of stale trials, which would fail them without ending their runs.
        recover_stale_trials(study, job)
        study.optimize(objective, n_trials=1, catch=(TrialFailed, TargetReached), callbacks=[reporter],
                       gc_after_trial=False)
    logger.info("Worker %d done: %s", os.getpid(), times.summary(reporter.seconds))
    return times


def prepare(job: SweepJob) -> tuple[Any, Run]:
    """Open or create the study, recover stale trials and find its parent run, before any worker starts."""
    if job.source is not None:
        job.resolve_source()  # an unusable source fails here, before the study exists
    study = open_study(job, create=True)
    if not job.source_overrides:
        job.resolve_source()  # the source stored in the study, or a check that the model needs none
    parent = ensure_parent_run(study, job)
    job.parent_run_id = parent.run_id
    recover_stale_trials(study, job)
    return study, parent
