"""The `research` command line."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
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

    level = logging.INFO
    if quiet:
        level = logging.WARNING
    if verbose:
        level = logging.DEBUG
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


@main.group("models", invoke_without_command=True)
@click.pass_context
def models_group(ctx: click.Context) -> None:
    """List the models that can be trained, with every hyperparameter.

    `research models versions NAME` lists the versions of an MLflow registered model.
    """
    if ctx.invoked_subcommand is not None:
        return
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


def parse_methods(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    from research.latent import METHODS

    methods = tuple(name.strip().lower() for name in value.split(",") if name.strip())
    unknown = [name for name in methods if name not in METHODS]
    if unknown or not methods:
        raise click.BadParameter(f"{value!r} names no known view; give a comma-separated list of "
                                 f"{', '.join(METHODS)}", ctx=ctx, param=param)
    return methods


def explore_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options of the latent exploration, shared by `run` and `explore`."""
    options = [
        click.option("--n-samples", type=click.IntRange(min=1),
                     help="Test images to encode for the latent views (default: the whole test set)."),
        click.option("--methods", default="pca,tsne,umap", show_default=True, callback=parse_methods,
                     help="Comma-separated 2-D views of the latent codes."),
        click.option("--perplexity", type=click.FloatRange(min=0, min_open=True), default=30.0,
                     show_default=True, help="t-SNE perplexity, lowered to what the number of points allows."),
        click.option("--n-neighbors", type=click.IntRange(min=2), default=15, show_default=True,
                     help="UMAP neighbours, lowered to what the number of points allows."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def make_explore_options(n_samples: int | None, methods: tuple[str, ...], perplexity: float,
                         n_neighbors: int) -> Any:
    from research.latent import ExploreOptions

    return ExploreOptions(n_samples=n_samples, methods=methods, perplexity=perplexity, n_neighbors=n_neighbors)


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
@click.option("--from", "source", metavar="SOURCE",
              help="Start from a trained model: a run id, a checkpoint path or a models:/NAME/VERSION URI "
                   "(classifier: the encoder to fine-tune).")
@click.option("--no-score", is_flag=True, help="Skip the sample-quality score of generative models.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or per-epoch lines.")
@click.option("--register", is_flag=True,
              help="At the end, register the best checkpoint as a new version of the registered model MODEL.")
@click.option("--no-explore", is_flag=True,
              help="Skip the latent exploration that runs after training a model with an encoder.")
@explore_options
@click.option("--resume", "resume_run_id", metavar="RUN_ID",
              help="Continue a stopped run from its last checkpoint in the same MLflow run; "
                   "only --epochs may raise its epoch count.")
def run_command(model_name: str | None, overrides: tuple[str, ...], epochs: int | None, batch_size: int | None,
                seed: int | None, device: str, train_size: int | None, experiment: str | None,
                run_name: str | None, data_dir: str | None, source: str | None, no_score: bool, quiet: bool,
                register: bool, no_explore: bool, n_samples: int | None, methods: tuple[str, ...],
                perplexity: float, n_neighbors: int, resume_run_id: str | None) -> None:
    """Train MODEL in a new MLflow run, or continue a stopped run with --resume.

    A model with an encoder is then explored in the same run (latent views,
    probes, generation from codes; see `research explore`) unless --no-explore.
    """
    from research.model_registry import RegisterAtEnd
    from research.runner import RunOptions, train
    from research.spec import split_override

    values = dict(split_override(text) for text in overrides)
    for name, value in (("n_epochs", epochs), ("batch_size", batch_size), ("train_size", train_size)):
        if value is not None:
            values[name] = value
    if quiet:
        configure_logging(verbose=False, quiet=True)
    point = None
    tags: dict[str, str] = {}
    if resume_run_id:
        if source is not None:
            raise UsageError("--from cannot be given with --resume: the run keeps the source it started from")
        point, spec = resume_point_and_spec(resume_run_id, model_name, values, seed, experiment, run_name)
    else:
        spec, tags = new_run_spec(model_name, values, seed, source)

    finishers: list[Any] = []
    if spec.model_class.has_encoder and not no_explore:
        from research.latent import explore_finisher

        finishers.append(explore_finisher(make_explore_options(n_samples, methods, perplexity, n_neighbors)))
    if spec.model_class.can_generate and not no_score:
        from research.scoring import score_finisher

        finishers.append(score_finisher)
    registration = RegisterAtEnd(spec.model_name) if register else None
    if registration is not None:
        registration.check_target()  # before training, so a taken name costs no training time
        finishers.append(registration)  # last, so the version carries every metric of the run
    options = RunOptions(experiment=experiment, run_name=run_name, device=device, data_dir=data_dir,
                         quiet=quiet, tags=tags, finishers=finishers)
    outcome = train(spec, options, resume_from=point)
    print_run_location(outcome.run_id, outcome.experiment_id)
    if registration is not None and registration.version is not None:
        version = registration.version
        click.echo(f"Registered {version.name!r} version {version.version}; promote it with "
                   f"`research promote {version.name} {version.version} --stage production`.")


def new_run_spec(model_name: str | None, values: dict[str, Any], seed: int | None,
                 source: str | None) -> tuple[Any, dict[str, str]]:
    """Build the spec of a new run, with the overrides and tags that `--from` implies."""
    from research.models import find_model_or_raise
    from research.spec import build_spec

    if model_name is None:
        raise UsageError("missing MODEL: name the model to train (`research models` lists them), "
                         "or give --resume RUN_ID to continue a stopped run")
    model_class = find_model_or_raise(model_name)
    tags: dict[str, str] = {}
    if source is not None:
        setup = model_class.setup_from_source(source)
        values = {**setup.overrides, **values}
        tags.update(setup.tags)
    return build_spec(model_name, values, seed=0 if seed is None else seed), tags


def resume_point_and_spec(run_id: str, model_name: str | None, values: dict[str, Any], seed: int | None,
                          experiment: str | None, run_name: str | None) -> tuple[Any, Any]:
    """Find where run `run_id` continues, rejecting options that would change what it logged."""
    from research.resume import find_resume_point, resumed_spec

    for flag, given in (("--experiment", experiment), ("--run-name", run_name)):
        if given is not None:
            raise UsageError(f"{flag} cannot be given with --resume: the run keeps its experiment and name")
    point = find_resume_point(run_id)
    if model_name is not None and model_name != point.spec.model_name:
        raise UsageError(f"run {run_id} trains model {point.spec.model_name!r}, not {model_name!r}; "
                         "drop MODEL or give the run's model")
    return point, resumed_spec(point, values, seed)


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
COMMAND_MODULES: tuple[str, ...] = ("research.cli_registry", "research.cli_score", "research.cli_explore",
                                   "research.cli_sweep")
for _module in COMMAND_MODULES:
    importlib.import_module(_module)


def run() -> None:
    """Entry point of the console script."""
    main(prog_name="research")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    # Under `python -m research.cli` this module is `__main__`, a different object from
    # `research.cli`, and the command modules attach their commands to `research.cli.main`.
    from research.cli import run as run_package_cli

    sys.exit(run_package_cli())
