"""`research explore RUN_ID`: add the latent exploration to an existing run."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import click
import yaml

from research.cli import explore_options, main, make_explore_options
from research.errors import CheckpointError, ResearchError, UsageError

logger = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoints/best.pt"


@main.command("explore")
@click.argument("run_id")
@explore_options
@click.option("--seed", type=int, help="Seed of subsampling, t-SNE, UMAP and sampled codes (default: the run's).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--data-dir", envvar="RESEARCH_DATA_DIR", type=click.Path(file_okay=False),
              help="Folder holding the FashionMNIST idx files.")
def explore_command(run_id: str, n_samples: int | None, methods: tuple[str, ...], perplexity: float,
                    n_neighbors: int, seed: int | None, device: str, data_dir: str | None) -> None:
    """Explore the latent space of the model that run RUN_ID trained, logging into that run.

    Loads the run's checkpoints/best.pt and config.yaml, encodes the test set
    and adds the latent/ metrics and figures to the same run.
    """
    from research.checkpoints import build_model_from_checkpoint, load_checkpoint
    from research.latent import explore
    from research.runner import load_data
    from research.tracking import Run, make_client
    from research.training import resolve_device

    client = make_client()
    found = find_run_or_raise(client, run_id)
    with tempfile.TemporaryDirectory(prefix="research-explore-") as tmp:
        spec = read_run_spec(client, run_id, Path(tmp))
        if not spec.model_class.has_encoder:
            raise UsageError(f"run {run_id} trained model {spec.model_name!r}, which has no encoder, so there "
                             "is no latent space to explore; pass the id of a run of a model with an encoder")
        checkpoint = load_checkpoint(download_artifact(client, run_id, CHECKPOINT_ARTIFACT, Path(tmp)))
    torch_device = resolve_device(device)
    model = build_model_from_checkpoint(checkpoint, f"{run_id}/{CHECKPOINT_ARTIFACT}").to(torch_device)
    data = load_data(spec, data_dir)
    options = make_explore_options(n_samples, methods, perplexity, n_neighbors)
    previous_status = found.info.status
    run = Run.resume(run_id, client=client)
    try:
        explore(run, model, data, options, seed=spec.seed if seed is None else seed,
                step=int(checkpoint.get("epoch", 0)))
    finally:
        # Exploring adds to the run's record; it does not change how the training ended.
        client.update_run(run_id, status=previous_status)
    click.echo(f"Added the latent exploration to run {run_id} (experiment {found.info.experiment_id}); "
               "see its latent/ artifacts and metrics in `mlflow ui`.")


def find_run_or_raise(client: Any, run_id: str) -> Any:
    """Return the MLflow run `run_id`; an unknown id raises `UsageError`."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        raise UsageError(f"run {run_id!r} not found in the MLflow store {client.tracking_uri} "
                         f"({str(error).splitlines()[0]}); copy the run id from `mlflow ui` or the output of "
                         "`research run`, and set MLFLOW_TRACKING_URI if the run is in another store") from None


def download_artifact(client: Any, run_id: str, path: str, folder: Path,
                      error_type: type[ResearchError] = CheckpointError) -> Path:
    """Download one artifact of a run; a missing one raises `error_type`."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, path, str(folder)))
    except (MlflowException, OSError) as error:
        raise error_type(f"run {run_id} has no artifact {path} ({str(error).splitlines()[0]}); only runs "
                              "that `research run` trained for at least one epoch can be explored") from None


def read_run_spec(client: Any, run_id: str, folder: Path) -> Any:
    """Rebuild the run's `RunSpec` (model, hyperparameters, data split, seed) from its config.yaml."""
    from research.spec import RunSpec

    text = download_artifact(client, run_id, "config.yaml", folder, UsageError).read_text()
    return RunSpec.from_dict(yaml.safe_load(text))
