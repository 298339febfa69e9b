"""The `research` command line."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import click

from registry import UnknownNameError
from research.errors import ResearchError, TrainingInterrupted, UsageError

logger = logging.getLogger("research")


class InterruptedExit(click.ClickException):
    """Training stopped on a signal; the exit status is 128 + the signal number, as shells report it."""

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + getattr(signal, signal_name, signal.SIGINT)


def message_with_notes(error: BaseException) -> str:
    return "\n".join([str(error), *getattr(error, "__notes__", [])])


class ResearchGroup(click.Group):
    """A click group that turns errors into clean messages and exit codes.

    Usage mistakes exit with status 2, runtime failures with status 1, and an
    interrupted training with 130 (SIGINT) or 143 (SIGTERM); none shows a
    traceback unless `--debug` is given.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise
        except Exception as error:
            if ctx.meta.get("research.debug"):
                raise
            raise as_click_exception(error) from None


def as_click_exception(error: Exception) -> click.ClickException:
    message = message_with_notes(error)
    if isinstance(error, (UsageError, UnknownNameError)):
        return click.UsageError(message, ctx=None)
    if isinstance(error, TrainingInterrupted):
        return InterruptedExit(message, error.signal_name)
    if isinstance(error, ResearchError):
        return click.ClickException(message)
    return click.ClickException(f"unexpected {type(error).__name__}: {message}\n"
                                "Run `research --debug ...` for the traceback.")


def configure_logging(verbose: bool, quiet: bool) -> None:
    """Send log records through tqdm, so they never break a progress bar."""
    from tqdm.contrib.logging import _TqdmLoggingHandler

    from research.tracking import quiet_mlflow_warnings

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = _TqdmLoggingHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("research")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    quiet_mlflow_warnings()


@click.group(cls=ResearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.version_option(package_name="research")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Train, track and compare unsupervised models on FashionMNIST.

    Runs are stored in MLflow (MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in
    this folder); view them with `mlflow ui`.
    """
    ctx.meta["research.debug"] = debug
    ctx.meta["research.verbose"] = verbose
    configure_logging(verbose, quiet=False)


@main.command("models")
def models_command() -> None:
    """List the registered models and every hyperparameter."""
    from research.models import MODELS, DataConfig

    for entry in MODELS.entries():
        model_class = entry.component
        doc = (model_class.__doc__ or "").strip().splitlines()[0] if model_class.__doc__ else ""
        click.secho(f"{entry.name}", bold=True, nl=False)
        click.echo(f"  {doc}" + (f"  [{entry.source}]" if entry.source != "builtin" else ""))
        print_params("model", model_class.Config.describe())
        print_params("train", model_class.default_training.describe(), model_class.default_training)
        click.echo()
    click.secho("data (every model)", bold=True)
    print_params("data", DataConfig.describe())


def print_params(group: str, infos: Sequence[Any], defaults: Any = None) -> None:
    for info in infos:
        default = getattr(defaults, info.name) if defaults is not None else info.default
        rule = f"; {info.rule}" if info.rule else ""
        click.echo(f"  {group}.{info.name:<14} {info.type_name:<11} default {default!s:<10} {info.help}{rule}")


def print_run_location(run_id: str, experiment_id: str) -> None:
    from research.tracking import tracking_uri

    click.echo(f"Run {run_id} finished (experiment {experiment_id}, store {tracking_uri()}).")
    click.echo("View it with `mlflow ui` in this folder, then open "
               f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}")


@main.command("run")
@click.argument("model_name", metavar="MODEL", required=False)
@click.option("-p", "--param", "overrides", multiple=True, metavar="NAME=VALUE",
              help="Set a hyperparameter (repeatable); `research models` lists them.")
@click.option("--epochs", type=click.IntRange(min=1), help="Number of training epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per training batch.")
@click.option("--seed", type=int, help="Seed of weights, shuffling and noise.  [default: 0]")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--train-size", type=click.IntRange(min=1), help="Train on the first N training images only.")
@click.option("--experiment", help="MLflow experiment (default: the model name).")
@click.option("--run-name", help="MLflow run name.")
@click.option("--data-dir", envvar="RESEARCH_DATA_DIR", type=click.Path(file_okay=False),
              help="Folder holding the FashionMNIST idx files.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
@click.option("--resume", "resume_run_id", metavar="RUN_ID",
              help="Continue a stopped run from its last checkpoint in the same MLflow run; "
                   "only --epochs may raise its epoch count.")
def run_command(model_name: str | None, overrides: tuple[str, ...], epochs: int | None, batch_size: int | None,
                seed: int | None, device: str, train_size: int | None, experiment: str | None,
                run_name: str | None, data_dir: str | None, quiet: bool, resume_run_id: str | None) -> None:
    """Train MODEL in a new MLflow run, or continue a stopped run with --resume."""
    from research.runner import RunOptions, train
    from research.spec import build_spec, split_override

    values = dict(split_override(text) for text in overrides)
    for name, value in (("n_epochs", epochs), ("batch_size", batch_size), ("train_size", train_size)):
        if value is not None:
            values[name] = value
    if quiet:
        configure_logging(verbose=False, quiet=True)
    options = RunOptions(experiment=experiment, run_name=run_name, device=device, data_dir=data_dir,
                         quiet=quiet)
    if resume_run_id:
        outcome = resume_run(resume_run_id, model_name, values, seed, options)
    elif model_name is None:
        raise UsageError("missing MODEL: name the model to train (`research models` lists them), "
                         "or give --resume RUN_ID to continue a stopped run")
    else:
        spec = build_spec(model_name, values, seed=0 if seed is None else seed)
        outcome = train(spec, options)
    print_run_location(outcome.run_id, outcome.experiment_id)


def resume_run(run_id: str, model_name: str | None, values: dict[str, Any], seed: int | None,
               options: Any) -> Any:
    """Continue run `run_id`, rejecting options that would change what it logged."""
    from research.resume import find_resume_point, resumed_spec
    from research.runner import train

    for flag, given in (("--experiment", options.experiment), ("--run-name", options.run_name)):
        if given is not None:
            raise UsageError(f"{flag} cannot be given with --resume: the run keeps its experiment and name")
    point = find_resume_point(run_id)
    if model_name is not None and model_name != point.spec.model_name:
        raise UsageError(f"run {run_id} trains model {point.spec.model_name!r}, not {model_name!r}; "
                         "drop MODEL or give the run's model")
    spec = resumed_spec(point, values, seed)
    return train(spec, options, resume_from=point)


@main.group("data", invoke_without_command=True)
@click.option("--data-dir", envvar="RESEARCH_DATA_DIR", type=click.Path(file_okay=False),
              help="Folder holding the FashionMNIST idx files.")
@click.pass_context
def data_group(ctx: click.Context, data_dir: str | None) -> None:
    """Show where the dataset comes from and the split sizes."""
    ctx.obj = {"data_dir": data_dir}
    if ctx.invoked_subcommand is not None:
        return
    from research.data import CLASS_NAMES, load

    dataset = load(data_dir)
    click.echo(f"FashionMNIST from {dataset.source}")
    for name, size in dataset.sizes().items():
        click.echo(f"  {name:<5} {size:>6} images")
    click.echo("  classes: " + ", ".join(CLASS_NAMES))


@data_group.command("fetch")
def data_fetch_command() -> None:
    """Download FashionMNIST into the project's data cache (needs internet)."""
    from research.data import fetch

    folder = fetch()
    click.echo(f"FashionMNIST is in {folder}")


# Command groups of other areas attach themselves to `main` when imported.
COMMAND_MODULES: tuple[str, ...] = ()
for _module in COMMAND_MODULES:
    importlib.import_module(_module)


def run() -> None:
    """Entry point of the console script."""
    main(prog_name="research")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(run())
