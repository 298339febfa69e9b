"""`research sweep`: list, run, inspect and reuse named Optuna sweeps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from research.cli import configure_logging, main, print_run_location
from research.sweeps.storage import DEFAULT_HEARTBEAT_S, STORAGE_ENV

F = Callable[..., Any]


def sweeps_dir_option(function: F) -> F:
    return click.option("--sweeps-dir", "sweeps_dirs", multiple=True, type=click.Path(file_okay=False),
                        help="Another folder of sweep files (repeatable); RESEARCH_SWEEPS_DIR adds more, "
                             "separated like PATH.")(function)


def study_options(function: F) -> F:
    function = click.option("--study-name", help="Optuna study name (default: the sweep name).")(function)
    function = click.option("--storage", envvar=STORAGE_ENV,
                            help="Optuna storage URL (default: sqlite:///optuna.db in this folder; "
                                 f"{STORAGE_ENV} sets it too).")(function)
    return sweeps_dir_option(function)


def load_definition(name: str, sweeps_dirs: tuple[str, ...]) -> Any:
    from research.sweeps import find_sweep_or_raise, register_sweep_folders

    register_sweep_folders(sweeps_dirs)
    return find_sweep_or_raise(name)


def make_job(definition: Any, storage: str | None, study_name: str | None, **settings: Any) -> Any:
    from research.sweeps.storage import storage_url
    from research.sweeps.study import SweepJob

    name = study_name or definition.name
    return SweepJob(definition=definition, storage=storage_url(storage), study_name=name,
                    n_trials=settings.pop("n_trials", None) or definition.n_trials,
                    n_epochs=settings.pop("n_epochs", None) or definition.n_epochs,
                    experiment=settings.pop("experiment", None) or f"sweep-{name}", **settings)


@main.group("sweep")
def sweep_group() -> None:
    """Run named Optuna sweeps from sweeps/*.yaml, each trial a nested MLflow run."""


@sweep_group.command("list")
@sweeps_dir_option
def list_command(sweeps_dirs: tuple[str, ...]) -> None:
    """List the registered sweeps: name, model, objective and target number of trials."""
    from research.errors import UsageError
    from research.sweeps import SWEEPS, definition_of, register_sweep_folders

    register_sweep_folders(sweeps_dirs)
    click.echo(f"{'name':<22} {'model':<12} {'objective':<26} {'trials':>6}  source")
    for entry in SWEEPS.entries():
        try:
            definition = definition_of(entry.name, entry.component)
        except UsageError as error:
            click.echo(f"{entry.name:<22} invalid: {error}")
            continue
        objective = f"{definition.direction} {definition.metric}"
        click.echo(f"{entry.name:<22} {definition.model:<12} {objective:<26} {definition.n_trials:>6}  "
                   f"{definition.source}")


@sweep_group.command("run")
@click.argument("name")
@click.option("--n-trials", type=click.IntRange(min=1),
              help="Target number of finished (complete + pruned) trials of the study (default: the file's).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True),
              help="Start no new trial after this many seconds.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes on this machine.")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs of each trial (default: the file's).")
@click.option("--train-size", type=click.IntRange(min=1), help="Train each trial on the first N images only.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed of every trial.")
@click.option("--experiment", help="MLflow experiment (default: sweep-STUDY_NAME).")
@click.option("--heartbeat", "heartbeat_s", type=click.IntRange(min=1), default=DEFAULT_HEARTBEAT_S,
              show_default=True, help="Seconds between trial heartbeats; a trial silent for 3 heartbeats "
                                      "is marked FAIL and its parameters are queued again once.")
@click.option("--data-dir", envvar="RESEARCH_DATA_DIR", type=click.Path(file_okay=False),
              help="Folder holding the FashionMNIST idx files.")
@click.option("--from", "source", metavar="SOURCE",
              help="The trained model every trial starts from (classifier: the encoder), as for `research run`. "
                   "The study stores it, so a resume needs no --from.")
@study_options
def run_command(name: str, n_trials: int | None, timeout_s: float | None, workers: int, epochs: int | None,
                train_size: int | None, device: str, seed: int, experiment: str | None, heartbeat_s: int,
                data_dir: str | None, source: str | None, storage: str | None, study_name: str | None,
                sweeps_dirs: tuple[str, ...]) -> None:
    """Run sweep NAME until its study has the target number of finished trials; rerun to resume."""
    from research.sweeps.launch import run_sweep
    from research.sweeps.storage import redact

    definition = load_definition(name, sweeps_dirs)
    job = make_job(definition, storage, study_name, n_trials=n_trials, n_epochs=epochs, experiment=experiment,
                   timeout_s=timeout_s, train_size=train_size, device=device, seed=seed, data_dir=data_dir,
                   heartbeat_s=heartbeat_s, n_workers=workers, source=source)
    counts = run_sweep(job)
    shown = ", ".join(f"{state} {count}" for state, count in sorted(counts.items()))
    click.echo(f"Study '{job.study_name}' in {redact(job.storage)}: {shown}.")
    click.echo(f"Parent MLflow run {job.parent_run_id} in experiment '{job.experiment}'; "
               f"see `research sweep status {name}` and `mlflow ui`.")


@sweep_group.command("status")
@click.argument("name")
@study_options
def status_command(name: str, storage: str | None, study_name: str | None, sweeps_dirs: tuple[str, ...]) -> None:
    """Show a study's trials by state, its best trial and the trials running now."""
    from research.sweeps.launch import study_overview
    from research.sweeps.study import n_finished, open_study

    definition = load_definition(name, sweeps_dirs)
    job = make_job(definition, storage, study_name)
    overview = study_overview(open_study(job, create=False, check=False))
    counts = overview["counts"]
    click.echo(f"Study '{job.study_name}': {n_finished(counts)} of {definition.n_trials} trials finished "
               f"(target in the sweep file)")
    for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"):
        click.echo(f"  {state:<9} {counts.get(state, 0)}")
    best = overview["best"]
    if best is not None:
        params = "  ".join(f"{key}={value}" for key, value in best.params.items())
        click.echo(f"Best trial {best.number}: {definition.metric} {best.value:.6g}  {params}")
    for trial in overview["running"]:
        epochs = len(trial.intermediate_values)
        started = trial.datetime_start.strftime("%Y-%m-%d %H:%M:%S") if trial.datetime_start else "?"
        click.echo(f"Running: trial {trial.number} since {started}, {epochs} epoch(s) reported, "
                   + "  ".join(f"{key}={value}" for key, value in trial.params.items()))


@sweep_group.command("best")
@click.argument("name")
@click.option("--train", is_flag=True, help="Train the best parameters now as a full tracked run.")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs of the --train run (default: the model's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N] for --train.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --train run.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-epoch lines during --train.")
@study_options
def best_command(name: str, train: bool, epochs: int | None, device: str, seed: int, quiet: bool,
                 storage: str | None, study_name: str | None, sweeps_dirs: tuple[str, ...]) -> None:
    """Print the best trial's parameters as `-p` flags of `research run`; --train runs them."""
    from research.errors import UsageError
    from research.sweeps.parent import best_trial
    from research.sweeps.study import open_study

    definition = load_definition(name, sweeps_dirs)
    job = make_job(definition, storage, study_name)
    best = best_trial(open_study(job, create=False, check=False))
    if best is None:
        raise UsageError(f"study {job.study_name!r} has no complete trial yet; run `research sweep run {name}`")
    values = {**definition.fixed, **best.params}
    flags = " ".join(f"-p {key}={value}" for key, value in values.items())
    source_flag = f" --from {job.source}" if job.source else ""
    click.echo(f"research run {definition.model}{source_flag} {flags}")
    if train:
        tags = {"research.study": job.study_name, "research.best_trial": str(best.number)}
        job.resolve_source()
        train_best(definition.model, {**job.source_overrides, **values}, epochs, device, seed, quiet,
                   tags={**job.tags, **tags})


def train_best(model: str, values: dict[str, Any], epochs: int | None, device: str, seed: int, quiet: bool,
               tags: dict[str, str]) -> None:
    from research.runner import RunOptions, train
    from research.spec import build_spec

    if epochs is not None:
        values = {**values, "n_epochs": epochs}
    if quiet:
        configure_logging(verbose=False, quiet=True)
    outcome = train(build_spec(model, values, seed=seed), RunOptions(device=device, quiet=quiet, tags=tags))
    print_run_location(outcome.run_id, outcome.experiment_id)
