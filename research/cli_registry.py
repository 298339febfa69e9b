"""Commands for registered models: register, promote, list versions, and use a model by URI.

MODEL_URI is `models:/NAME/VERSION`, `models:/NAME/STAGE`, `models:/NAME@ALIAS`,
`runs:/RUN_ID/checkpoints/best.pt`, `runs:/RUN_ID/model` or a checkpoint file.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import click

from research.cli import main, models_group
from research.errors import UsageError

URI_HELP = "MODEL_URI: models:/NAME/VERSION, models:/NAME/STAGE, models:/NAME@ALIAS, runs:/RUN_ID/… or a file."


@main.command("register")
@click.argument("run_id")
@click.option("--name", help="Registered model name (default: the run's model name, e.g. ae).")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which checkpoint of the run to register.")
def register_command(run_id: str, name: str | None, checkpoint: str) -> None:
    """Add a version to a registered model from the checkpoint of run RUN_ID."""
    from research.model_registry import register_run

    version = register_run(run_id, name, checkpoint)
    click.echo(f"{version.name!r} version {version.version} is registered. Load it with research.load_model('models:/{version.name}/{version.version}'); promote it with "
               f"`research promote {version.name} {version.version} --stage production`.")


@main.command("promote")
@click.argument("name")
@click.argument("version")
@click.option("--stage", required=True, type=click.Choice(["staging", "production", "archived"],
                                                          case_sensitive=False),
              help="Stage to move the version to; the alias of the same name follows it.")
def promote_command(name: str, version: str, stage: str) -> None:
    """Move VERSION of registered model NAME to a stage and set the alias of that name."""
    from research.model_registry import promote

    promoted = promote(name, version, stage)
    key = stage.lower()
    click.echo(f"{name!r} version {promoted.version} is now in stage {promoted.current_stage} with alias @{key}; "
               f"load it as models:/{name}@{key} or models:/{name}/{promoted.current_stage}.")


@models_group.command("versions")
@click.argument("name")
def versions_command(name: str) -> None:
    """List the versions of registered model NAME with stage, aliases, source run and test metrics."""
    from research.model_registry import aliases_by_version, find_registered_model_or_raise, list_versions, run_metrics
    from research.tracking import make_client

    client = make_client()
    aliases = aliases_by_version(find_registered_model_or_raise(client, name))
    versions = list_versions(client, name)
    if not versions:
        click.echo(f"Registered model {name!r} has no versions yet; add one with `research register RUN_ID`.")
        return
    click.echo(f"{'version':<8} {'stage':<11} {'aliases':<22} {'created':<17} {'source run':<33} test metrics")
    for version in versions:
        created = datetime.fromtimestamp(version.creation_timestamp / 1000).strftime("%Y-%m-%d %H:%M")
        shown_aliases = " ".join(f"@{alias}" for alias in aliases.get(str(version.version), [])) or "-"
        metrics = "  ".join(f"{key} {value:.4g}" for key, value in run_metrics(client, version.run_id).items())
        click.echo(f"{version.version:<8} {version.current_stage:<11} {shown_aliases:<22} {created:<17} "
                   f"{version.run_id or '-':<33} {metrics or '-'}")


def load_for_cli(model_uri: str, device: str) -> tuple[Any, Any]:
    """Resolve and load `model_uri`; return the model and where it came from."""
    from research.loading import load_source, resolve_model_uri
    from research.tracking import make_client

    client = make_client()
    source = resolve_model_uri(model_uri, client)
    return load_source(source, device, client), source


def capable_model_names(capability: str) -> str:
    from research.models import MODELS
    from research.pyfunc_model import prediction_kind

    names = []
    for entry in MODELS.entries():
        model_class = entry.component
        if capability == "sample" and model_class.can_generate:
            names.append(entry.name)
        elif capability == "reconstruct" and prediction_kind(model_class) == "reconstruct":
            names.append(entry.name)
    return ", ".join(names) or "none"


def is_autoencoder(model: Any) -> bool:
    return bool(model.has_encoder) and callable(getattr(model, "decode", None))


@main.command("sample", epilog=URI_HELP)
@click.argument("model_uri")
@click.option("-n", "--n", "n_samples", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Number of images to generate.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="samples.png", show_default=True,
              help="PNG file for the image grid.")
@click.option("--columns", type=click.IntRange(min=1), help="Images per row (default: about sqrt(N)).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampling noise.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda[:N].")
def sample_command(model_uri: str, n_samples: int, output: str, columns: int | None, seed: int,
                   device: str) -> None:
    """Generate images with the model at MODEL_URI and save them as a grid."""
    import torch

    from research.figures import image_grid

    model, source = load_for_cli(model_uri, device)
    if not model.can_generate:
        raise UsageError(f"{source.description} is a {model.name!r} model, which cannot generate images; "
                         f"models that can: {capable_model_names('sample')}")
    with torch.no_grad():
        images = model.sample(n_samples, generator=torch.Generator().manual_seed(seed))
    image_grid(images, columns or math.ceil(math.sqrt(n_samples))).save(output)
    click.echo(f"Wrote {n_samples} samples from {source.description} to {output}")


@main.command("reconstruct", epilog=URI_HELP)
@click.argument("model_uri")
@click.option("-n", "--n", "n_images", type=click.IntRange(1, 64), default=10, show_default=True,
              help="Number of test images to reconstruct (the first N of the test set).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="reconstructions.png",
              show_default=True, help="PNG file for the figure.")
@click.option("--data-dir", envvar="RESEARCH_DATA_DIR", type=click.Path(file_okay=False),
              help="Folder holding the FashionMNIST idx files.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu or cuda[:N].")
def reconstruct_command(model_uri: str, n_images: int, output: str, data_dir: str | None, device: str) -> None:
    """Reconstruct test images with the autoencoder at MODEL_URI and save originals above reconstructions."""
    import torch

    from research.data import load
    from research.figures import reconstruction_figure

    model, source = load_for_cli(model_uri, device)
    if not is_autoencoder(model):
        raise UsageError(f"{source.description} is a {model.name!r} model, which has no encoder and "
                         f"decoder; autoencoders: {capable_model_names('reconstruct')}")
    images = load(data_dir).test.float_images()[:n_images].to(model.device)
    with torch.no_grad():
        reconstructions = model.decode(model.encode(images))
    figure = reconstruction_figure(images, reconstructions)
    figure.savefig(output, dpi=100)
    click.echo(f"Wrote {n_images} test images and their reconstructions by {source.description} to {output}")


@main.command("evaluate", epilog=URI_HELP)
@click.argument("model_uri")
@click.option("--log", "log_to_source", is_flag=True, help="Log the metrics to the run the model came from.")
@click.option("--log-to", "log_run_id", metavar="RUN_ID", help="Log the metrics to this MLflow run.")
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True,
              help="Test images per batch.")
@click.option("--data-dir", envvar="RESEARCH_DATA_DIR", type=click.Path(file_okay=False),
              help="Folder holding the FashionMNIST idx files.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
def evaluate_command(model_uri: str, log_to_source: bool, log_run_id: str | None, batch_size: int,
                     data_dir: str | None, device: str) -> None:
    """Print the test-set metrics of the model at MODEL_URI, and log them on request."""
    from research.data import load

    if log_to_source and log_run_id:
        raise UsageError("--log and --log-to both name a run to log to; give one of them")
    model, source = load_for_cli(model_uri, device)
    target = evaluation_run(log_run_id or (source.run_id if log_to_source else None))
    if log_to_source and target is None:
        raise UsageError(f"{source.description} has no source run to log to; use --log-to RUN_ID")
    metrics = model.test_metrics(load(data_dir), batch_size)
    click.echo(f"Test metrics of {source.description}:")
    for key, value in metrics.items():
        click.echo(f"  {key:<16} {value:.6g}")
    if target is not None:
        target.log_metrics(metrics, step=0)
        target.set_tags({"research.evaluated_model": model_uri})
        click.echo(f"Logged them to run {target.run_id}.")


def evaluation_run(run_id: str | None) -> Any:
    """Return an existing run (finished or not) to log to, checked before the evaluation starts."""
    from research.model_registry import find_run_or_raise
    from research.tracking import Run, make_client

    if run_id is None:
        return None
    client = make_client()
    found = find_run_or_raise(client, run_id)
    return Run(client, run_id, found.info.experiment_id)
