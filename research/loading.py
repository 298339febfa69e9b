"""Load a research model by URI from the MLflow registry, a run, or a checkpoint file.

Accepted URIs:

- `models:/NAME/VERSION`, `models:/NAME/STAGE` (Staging, Production, Archived, None;
  any letter case), `models:/NAME/latest` and `models:/NAME@ALIAS`;
- `models:/m-…`, the id of a logged model that research registered;
- `runs:/RUN_ID/checkpoints/best.pt` (any checkpoint artifact of a run) and
  `runs:/RUN_ID/model` (the logged model that `research register` made from it);
- a path to a checkpoint file.

Loading reads the checkpoint with `research.checkpoints` (weights and config as
plain data) and runs no code from the store.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from research.errors import UsageError
from research.model_registry import (
    MODEL_TAG,
    find_latest_version_or_raise,
    find_run_or_raise,
    find_version_by_alias_or_raise,
    find_version_by_stage_or_raise,
    find_version_or_raise,
    mlflow_errors,
    without_progress_bars,
)
from research.tracking import make_client

URI_FORMS = ("models:/NAME/VERSION, models:/NAME/STAGE, models:/NAME@ALIAS, runs:/RUN_ID/checkpoints/best.pt, "
             "runs:/RUN_ID/model or a checkpoint file")


@dataclass(frozen=True)
class ModelSource:
    """The target of a model URI.

    `kind` is `model_folder` (an MLflow model at the artifact URI `location`),
    `run_checkpoint` (the artifact path `location` of run `run_id`) or `file`
    (a local checkpoint at `location`).
    """

    uri: str
    description: str
    kind: str
    location: str
    run_id: str | None = None
    version: Any = None  # the MLflow ModelVersion, for registry URIs


def resolve_model_uri(uri: str, client: Any = None) -> ModelSource:
    """Find what `uri` points at; unknown names, versions, stages and aliases raise `UsageError`."""
    client = client or make_client()
    if uri.startswith("models:/"):
        return resolve_models_uri(client, uri)
    if uri.startswith("runs:/"):
        return resolve_runs_uri(client, uri)
    if Path(uri).is_file():
        return ModelSource(uri, f"checkpoint {uri}", "file", uri)
    raise UsageError(f"invalid model URI {uri!r}: no such file, and not a models:/ or runs:/ URI; use "
                     f"{URI_FORMS}")


def resolve_models_uri(client: Any, uri: str) -> ModelSource:
    body = uri[len("models:/"):].strip("/")
    if body.startswith("m-") and "/" not in body and "@" not in body:
        return resolve_logged_model(client, uri, body)
    if "@" in body:
        name, alias = body.split("@", 1)
        version = find_version_by_alias_or_raise(client, name, alias)
    elif "/" in body:
        name, reference = body.split("/", 1)
        if reference.isdigit():
            version = find_version_or_raise(client, name, reference)
        elif reference.lower() == "latest":
            version = find_latest_version_or_raise(client, name)
        else:
            version = find_version_by_stage_or_raise(client, name, reference)
    else:
        raise UsageError(f"model URI {uri!r} names no version, stage or alias; use models:/{body}/VERSION, "
                         f"models:/{body}/Production or models:/{body}@production")
    with mlflow_errors(f"locating the files of {name!r} version {version.version}"):
        location = client.get_model_version_download_uri(name, version.version)
    return ModelSource(uri, f"registered model {name!r} version {version.version}", "model_folder", location,
                       run_id=version.run_id, version=version)


def resolve_logged_model(client: Any, uri: str, model_id: str) -> ModelSource:
    from mlflow.exceptions import MlflowException

    try:
        logged = client.get_logged_model(model_id)
    except MlflowException:
        raise UsageError(f"logged model {model_id!r} not found in {client.tracking_uri}") from None
    check_logged_model(logged)
    return ModelSource(uri, f"logged model {model_id}", "model_folder", logged.artifact_location,
                       run_id=logged.source_run_id)


def check_logged_model(logged: Any) -> None:
    if MODEL_TAG not in logged.tags:
        raise UsageError(f"logged model {logged.model_id} was not made by research (it has no {MODEL_TAG!r} "
                         "tag); load it with mlflow.pyfunc.load_model instead")


def resolve_runs_uri(client: Any, uri: str) -> ModelSource:
    run_id, _, path = uri[len("runs:/"):].partition("/")
    path = path.strip("/")
    run = find_run_or_raise(client, run_id)
    if path.endswith(".pt"):
        folder = path.rpartition("/")[0] or None
        with mlflow_errors(f"listing the artifacts of run {run_id}"):
            present = [entry.path for entry in client.list_artifacts(run_id, folder)]
        if path in present:
            return ModelSource(uri, f"{path} of run {run_id}", "run_checkpoint", path, run_id=run_id)
    else:
        logged = find_logged_model(client, run, path)
        if logged is not None:
            check_logged_model(logged)
            return ModelSource(uri, f"logged model {path!r} of run {run_id}", "model_folder",
                               logged.artifact_location, run_id=run_id)
    raise UsageError(f"run {run_id} has no checkpoint or logged model at {path!r}; it has "
                     f"{describe_run_contents(client, run)}")


def find_logged_model(client: Any, run: Any, name: str) -> Any:
    """Return the newest logged model called `name` that `run` produced, or None."""
    if not name or "'" in name:
        return None
    with mlflow_errors(f"searching the logged models of run {run.info.run_id}"):
        found = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}' AND name = '{name}'",
            order_by=[{"field_name": "creation_time", "ascending": False}], max_results=1)
    return found[0] if found else None


def describe_run_contents(client: Any, run: Any) -> str:
    with mlflow_errors(f"listing the artifacts of run {run.info.run_id}"):
        checkpoints = [f"runs:/{run.info.run_id}/{entry.path}"
                       for entry in client.list_artifacts(run.info.run_id, "checkpoints")]
        logged = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                             filter_string=f"source_run_id = '{run.info.run_id}'")
    names = sorted({f"runs:/{run.info.run_id}/{model.name}" for model in logged})
    return ", ".join(checkpoints + names) or "no checkpoints and no logged models"


def fetch_checkpoint(source: ModelSource, folder: Path, client: Any) -> Path:
    """Return a local path to the checkpoint of `source`, downloading into `folder` when needed."""
    import mlflow.artifacts

    if source.kind == "file":
        return Path(source.location)
    without_progress_bars()
    with mlflow_errors(f"downloading {source.description}"):
        if source.kind == "run_checkpoint":
            return Path(client.download_artifacts(source.run_id, source.location, str(folder)))
        model_folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source.location, dst_path=str(folder),
                                                                tracking_uri=client.tracking_uri))
    return checkpoint_in_model_folder(model_folder, source)


def checkpoint_in_model_folder(model_folder: Path, source: ModelSource) -> Path:
    """Find the checkpoint that an MLmodel file lists among its pyfunc artifacts."""
    from research.pyfunc_model import CHECKPOINT_ARTIFACT

    mlmodel = model_folder / "MLmodel"
    description = yaml.safe_load(mlmodel.read_text()) if mlmodel.is_file() else None
    artifacts = ((description or {}).get("flavors", {}).get("python_function", {}).get("artifacts") or {})
    if CHECKPOINT_ARTIFACT not in artifacts:
        raise UsageError(f"{source.description} has no research checkpoint among its files; it was not "
                         "registered by research, so load it with mlflow.pyfunc.load_model")
    return model_folder / artifacts[CHECKPOINT_ARTIFACT]["path"]


def load_source(source: ModelSource, device: str | torch.device = "cpu", client: Any = None) -> Any:
    """Load the model that `source` points at onto `device`, in eval mode."""
    from research.checkpoints import load_model_checkpoint
    from research.training import resolve_device

    target = resolve_device(device) if isinstance(device, str) else device
    with tempfile.TemporaryDirectory(prefix="research-load-") as tmp:
        path = fetch_checkpoint(source, Path(tmp), client or make_client())
        return load_model_checkpoint(path, target)


def load_model(uri: str, device: str | torch.device = "cpu") -> Any:
    """Load the research model that `uri` names (see the module docstring) onto `device`.

    Returns the project's model class (for example `Autoencoder`) with its
    weights, in eval mode.
    """
    client = make_client()
    return load_source(resolve_model_uri(uri, client), device, client)
