"""Run one tracked training: start the MLflow run, train, log the results, end the run.

Whatever happens, the run ends: FINISHED on success, KILLED on an interrupt,
FAILED on any error, with the reason in the tag `research.end_reason`.
"""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from research.data import FashionMNIST, load
from research.errors import TrainingInterrupted
from research.figures import loss_curve_figure
from research.resume import ResumePoint, local_checkpoint_dir, resume_command, write_owner
from research.signals import signals_ignored, sigterm_as_keyboard_interrupt
from research.spec import RunSpec
from research.tracking import OfflineRun, Run, check_tracking_store
from research.training import EpochCallback, FitResult, Trainer, check_batch_size, check_fits_in_memory, resolve_device

logger = logging.getLogger(__name__)

END_REASON_TAG = "research.end_reason"


@dataclass
class RunOptions:
    """Tracking and placement options of a run; none of them changes the results."""

    experiment: str | None = None
    run_name: str | None = None
    device: str = "auto"
    data_dir: str | None = None
    quiet: bool = False
    track: bool = True
    tags: Mapping[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    callbacks: Iterable[EpochCallback] = ()
    finishers: Iterable[Finisher] = ()


@dataclass
class FinishedTraining:
    """The input of a finisher: the run, its spec, the data and the trained model at its best epoch."""

    run: Run
    spec: RunSpec
    data: FashionMNIST
    fit: FitResult
    device: torch.device

    @property
    def model(self) -> Any:
        return self.fit.model


# A step that adds to a run after training and before it ends (latent exploration,
# sample scores, registration); it runs in order and may log metrics and artifacts.
Finisher = Callable[[FinishedTraining], None]


@dataclass
class RunOutcome:
    """The finished run: its id, the fit result and the test metrics."""

    run_id: str
    experiment_id: str
    fit: FitResult
    test_metrics: dict[str, float]
    tracking_seconds: float


def load_data(spec: RunSpec, data_dir: str | None = None) -> FashionMNIST:
    return load(data_dir, val_fraction=spec.data.val_fraction, split_seed=spec.data.split_seed,
                train_size=spec.data.train_size)


def library_versions() -> dict[str, str]:
    import mlflow

    from research import __version__

    return {"version.research": __version__, "version.torch": torch.__version__,
            "version.mlflow": mlflow.__version__, "version.python": platform.python_version()}


def start_run(spec: RunSpec, options: RunOptions) -> Run:
    if not options.track:
        return OfflineRun()
    check_tracking_store()
    experiment = options.experiment or spec.model_name
    tags = {"research.model": spec.model_name, **options.tags}
    run = Run.start(experiment, options.run_name, tags, parent_run_id=options.parent_run_id)
    logger.info("MLflow run %s in experiment '%s' at %s", run.run_id, experiment, run.client.tracking_uri)
    return run


def train(spec: RunSpec, options: RunOptions | None = None, *, data: FashionMNIST | None = None,
          resume_from: ResumePoint | None = None) -> RunOutcome:
    """Train `spec` in a new tracked run, or continue `resume_from` in its run, and return the outcome.

    On failure the run ends FAILED or KILLED and the exception gets a note saying
    where the last checkpoint is and how to resume; a second Ctrl-C (a
    `KeyboardInterrupt`) is raised as `TrainingInterrupted` once the run is ended.
    """
    options = options or RunOptions()
    device = resolve_device(options.device)
    data = data or load_data(spec, options.data_dir)
    check_batch_size(spec, data)
    check_fits_in_memory(spec, device)
    with sigterm_as_keyboard_interrupt():
        run = start_run(spec, options) if resume_from is None else reopen_run(spec, resume_from)
        checkpoint_dir = (local_checkpoint_dir(run.run_id) if options.track
                          else Path(tempfile.mkdtemp(prefix="research-offline-")))
        trainer = None
        try:
            trainer = prepare_trainer(run, spec, data, device, options, checkpoint_dir, resume_from)
            result = trainer.fit()
            test_metrics = finish_run(run, spec, data, result)
            for finisher in options.finishers:
                finisher(FinishedTraining(run, spec, data, result, device))
        except BaseException as error:
            end_unfinished(run, error, trainer, checkpoint_dir)
            if isinstance(error, KeyboardInterrupt):
                interrupted = TrainingInterrupted(str(error) or "SIGINT",
                                                  trainer.state.epoch + 1 if trainer else 0)
                interrupted.__notes__ = getattr(error, "__notes__", [])
                raise interrupted from error
            raise
        run.end("FINISHED")
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # every checkpoint is in MLflow now
    return RunOutcome(run.run_id, run.experiment_id, result, test_metrics, run.tracking_seconds)


def prepare_trainer(run: Run, spec: RunSpec, data: FashionMNIST, device: torch.device, options: RunOptions,
                    checkpoint_dir: Path, resume_from: ResumePoint | None) -> Trainer:
    if options.track:
        write_owner(checkpoint_dir)
    if resume_from is None:
        log_run_setup(run, spec, data, device)
    logger.info("Training '%s' (%s) on %s: %s", spec.model_name, describe(spec.model.to_dict()), device,
                ", ".join(f"{name} {size}" for name, size in data.sizes().items()))
    trainer = Trainer(spec, data, run, device=device, checkpoint_dir=checkpoint_dir,
                      callbacks=options.callbacks, quiet=options.quiet, upload_checkpoints=options.track)
    if resume_from is not None and resume_from.checkpoint is not None:
        trainer.restore(resume_from.checkpoint)
        state = trainer.state
        logger.info("Resuming at epoch %d, step %d of %d (checkpoint from %s)", state.epoch + 1,
                    state.step_in_epoch, trainer.steps_per_epoch, resume_from.checkpoint_source)
    return trainer


def reopen_run(spec: RunSpec, point: ResumePoint) -> Run:
    """Set a stopped run RUNNING again and record the resume in its tags."""
    run = Run.resume(point.run_id)
    tags = {"research.resumes": point.n_resumes + 1}
    if spec.train.n_epochs != point.logged_n_epochs:
        # MLflow params cannot change, so train.n_epochs keeps the first target and this tag the current one.
        tags["research.n_epochs"] = spec.train.n_epochs
    run.set_tags(tags)
    run.delete_tag(END_REASON_TAG)
    logger.info("Resuming MLflow run %s in experiment %s at %s", run.run_id, run.experiment_id,
                run.client.tracking_uri)
    return run


def describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def log_run_setup(run: Run, spec: RunSpec, data: FashionMNIST, device: torch.device) -> None:
    sizes = {f"split.{name}": size for name, size in data.sizes().items()}
    run.log_params({**spec.params(), **sizes, "device": str(device), **library_versions()})
    run.set_tags({"research.data_source": str(data.source)})
    run.log_text(yaml.safe_dump(spec.to_dict(), sort_keys=False), "config.yaml")


def finish_run(run: Run, spec: RunSpec, data: FashionMNIST, result: FitResult) -> dict[str, float]:
    """Log the test metrics and final figures of a trained model."""
    model = result.model
    state = result.state
    test_metrics = model.test_metrics(data, max(spec.train.batch_size, 512))
    summary = {**test_metrics, "best_epoch": state.best_epoch, "train_time_s": result.train_seconds}
    run.log_metrics(summary, step=state.epoch)
    run.set_tags({"research.stopped_early": str(state.stopped_early).lower()})
    run.log_figure(loss_curve_figure(state.history, title=f"{spec.model_name} training"),
                   "figures/loss_curve.png")
    log_milestones(run, model, state.history)
    model.on_train_end(run, data)
    shown = "  ".join(f"{key} {value:.4g}" for key, value in test_metrics.items())
    logger.info("Finished after %d epoch%s (best epoch %d)  %s", state.epoch, "" if state.epoch == 1 else "s",
                state.best_epoch, shown)
    return test_metrics


def log_milestones(run: Run, model: Any, history: list[dict[str, float]]) -> None:
    """Log when each of the model's milestones was first reached, or tag that it never was.

    `seconds_to_<name>` sums `epoch_time_s` (training and validation) up to that epoch.
    """
    for name, (key, threshold) in model.milestones.items():
        seconds = 0.0
        reached = False
        for record in history:
            seconds += record.get("epoch_time_s", 0.0)
            if record.get(key, float("-inf")) >= threshold:
                epoch = int(record["epoch"])
                run.log_metrics({f"epochs_to_{name}": epoch, f"seconds_to_{name}": seconds}, step=epoch)
                reached = True
                break
        run.set_tags({f"research.reached_{name}": str(reached).lower()})
        if not reached:
            logger.info("%s never reached %g in %d epochs", key, threshold, len(history))


def end_unfinished(run: Run, error: BaseException, trainer: Trainer | None, checkpoint_dir: Path) -> None:
    """End a run that raised: KILLED on an interrupt, FAILED otherwise, keeping what it made.

    Adds a note to `error` naming the kept checkpoint and the command that resumes the run.
    """
    interrupted = isinstance(error, (TrainingInterrupted, KeyboardInterrupt))
    status = "KILLED" if interrupted else "FAILED"
    reason = str(error) or type(error).__name__
    # A further Ctrl-C while the run is being ended would leave it RUNNING.
    with signals_ignored():
        try:
            run.set_tags({END_REASON_TAG: f"{type(error).__name__}: {reason}"[:5000]})
            # A second Ctrl-C requests an immediate stop, so the figure is skipped then.
            if trainer is not None and trainer.state.history and not isinstance(error, KeyboardInterrupt):
                run.log_figure(loss_curve_figure(trainer.state.history), "figures/loss_curve.png")
        except Exception as tag_error:  # noqa: BLE001 - the store may be what failed; still end the run
            logger.warning("Could not record why run %s ended: %s", run.run_id, tag_error)
        ended = run.end(status)
    if isinstance(run, OfflineRun):
        return
    last = checkpoint_dir / "last.pt"
    where = (f"its last checkpoint is kept at {last}" if last.exists()
             else "it has no checkpoint yet, so a resume starts from the first epoch")
    state = f"ended {status}" if ended else f"could not be marked {status} in MLflow"
    add_note(error, f"Run {run.run_id} {state}; {where}. Resume it with: {resume_command(run.run_id)}")


def add_note(error: BaseException, note: str) -> None:
    # BaseException.add_note exists from Python 3.11 only; the attribute works on 3.10 too.
    error.__notes__ = [*getattr(error, "__notes__", []), note]
