"""Registered models made from research runs: register, promote and look up versions.

A version is an MLflow pyfunc model logged "from code" (`research/pyfunc_entry.py`)
whose one artifact is a slim checkpoint: model name, config and weights as plain
data. Nothing in it is pickled code, so it loads with `research.load_model` or
`mlflow.pyfunc.load_model` alike. Registered models, versions and their logged
models carry the tag `research.model` (the model name). Research rejects adding
to, promoting or loading a registered model without that tag.

Every function takes an explicit `MlflowClient` (default: `make_client()`), so it
never depends on MLflow's global tracking URI or active run.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from research.checkpoints import load_checkpoint, save_checkpoint
from research.errors import TrackingError, UsageError
from research.tracking import make_client

logger = logging.getLogger(__name__)

MODEL_TAG = "research.model"
CHECKPOINT_TAG = "research.checkpoint"
STAGES = ("staging", "production", "archived")
CHECKPOINTS = ("best", "last")
LOGGED_MODEL_NAME = "model"  # so `runs:/RUN_ID/model` names the logged model of a run
CHECKPOINT_FILE = "checkpoint.pt"
# Names end up inside `models:/NAME/...` URIs and search filters, so keep them to URI-safe words.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
# Keys a slim checkpoint keeps: enough to rebuild the model, not to resume training.
SLIM_KEYS = ("model_name", "config", "model_state", "extra_state", "run_spec", "run_id", "epoch")
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


@contextmanager
def stage_warnings_suppressed() -> Iterator[None]:
    """Hide MLflow's FutureWarning about stages for the calls inside.

    MLflow deprecated stages in favour of aliases in 2.9 and still warns in 3.17.
    Research sets both, so the warning gives its users nothing to act on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@contextmanager
def mlflow_errors(action: str) -> Iterator[None]:
    """Turn MLflow failures inside into a `TrackingError` that names `action`."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        raise TrackingError(f"{action} failed: {error.message}") from error


def is_not_found(error: Exception) -> bool:
    return getattr(error, "error_code", None) in NOT_FOUND_CODES


def without_progress_bars() -> None:
    # MLflow draws a tqdm bar on stderr for every artifact download unless this is false.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# --- looking things up ----------------------------------------------------------------------


def registered_model_names(client: Any) -> list[str]:
    with mlflow_errors("listing registered models"):
        return sorted(model.name for model in client.search_registered_models(max_results=1000))


def find_registered_model_or_raise(client: Any, name: str) -> Any:
    """Return the registered model `name`; raise `UsageError` when it is missing or not research's."""
    from mlflow.exceptions import MlflowException

    registered = None
    if NAME_PATTERN.fullmatch(name):
        try:
            registered = client.get_registered_model(name)
        except MlflowException as error:
            if not is_not_found(error):
                raise TrackingError(f"reading registered model {name!r} failed: {error.message}") from error
    if registered is None:
        known = ", ".join(registered_model_names(client)) or "none yet"
        raise UsageError(f"registered model {name!r} not found in {client.tracking_uri}; registered models: "
                         f"{known}. Register a run with `research register RUN_ID`")
    if MODEL_TAG not in registered.tags:
        raise UsageError(f"registered model {name!r} was not made by research (it has no {MODEL_TAG!r} "
                         "tag), so research does not add to, promote or load it; use MLflow's own API "
                         "for it, or register research runs under another name with --name")
    return registered


def list_versions(client: Any, name: str) -> list[Any]:
    """Return every version of the research registered model `name`, oldest first."""
    find_registered_model_or_raise(client, name)
    with mlflow_errors(f"listing versions of {name!r}"):
        versions = client.search_model_versions(f"name = '{name}'", max_results=10_000)
    return sorted(versions, key=lambda version: int(version.version))


def aliases_by_version(registered: Any) -> dict[str, list[str]]:
    """Return the aliases of each version number (as a string) of a registered model."""
    # ModelVersion.aliases from search_model_versions is empty on SQLite stores (MLflow 3.17),
    # so the registered model's alias mapping is the source.
    found: dict[str, list[str]] = {}
    for alias, version in sorted((registered.aliases or {}).items()):
        found.setdefault(str(version), []).append(alias)
    return found


def describe_versions(versions: list[Any]) -> str:
    if not versions:
        return "none"
    return ", ".join(f"{version.version} ({version.current_stage})" for version in versions)


def check_research_version(version: Any) -> Any:
    if MODEL_TAG not in version.tags:
        raise UsageError(f"version {version.version} of registered model {version.name!r} was not "
                         f"registered by research (it has no {MODEL_TAG!r} tag); load it with "
                         "mlflow.pyfunc.load_model instead")
    return version


def find_version_or_raise(client: Any, name: str, version: str | int) -> Any:
    """Return version `version` of `name`; an unknown one raises `UsageError` listing the others."""
    versions = list_versions(client, name)
    for found in versions:
        if str(found.version) == str(version).strip():
            return check_research_version(found)
    raise UsageError(f"registered model {name!r} has no version {version!r}; versions (stage): "
                     f"{describe_versions(versions)}")


def check_stage(stage: str, allowed: tuple[str, ...] = STAGES) -> str:
    """Return `stage` in lower case, or raise `UsageError` when it is not a stage."""
    key = stage.strip().lower()
    if key not in allowed:
        raise UsageError(f"unknown stage {stage!r}; stages: {', '.join(allowed)} (any letter case)")
    return key


def find_version_by_stage_or_raise(client: Any, name: str, stage: str) -> Any:
    """Return the newest version of `name` in `stage`, as MLflow's `models:/NAME/Stage` does."""
    key = check_stage(stage, (*STAGES, "none"))
    versions = list_versions(client, name)
    in_stage = [version for version in versions if version.current_stage.lower() == key]
    if not in_stage:
        raise UsageError(f"no version of registered model {name!r} is in stage {key.capitalize()}; "
                         f"versions (stage): {describe_versions(versions)}. Move one there with "
                         f"`research promote {name} VERSION --stage {key}`")
    return check_research_version(in_stage[-1])


def find_version_by_alias_or_raise(client: Any, name: str, alias: str) -> Any:
    """Return the version that `alias` points at; an unknown alias raises `UsageError` listing the others."""
    registered = find_registered_model_or_raise(client, name)
    aliases: Mapping[str, str] = registered.aliases or {}
    if alias not in aliases:
        known = ", ".join(f"@{key} (version {value})" for key, value in sorted(aliases.items())) or "none"
        raise UsageError(f"registered model {name!r} has no alias {alias!r}; aliases: {known}. Set one "
                         f"with `research promote {name} VERSION --stage STAGE`")
    return find_version_or_raise(client, name, aliases[alias])


def find_latest_version_or_raise(client: Any, name: str) -> Any:
    versions = list_versions(client, name)
    if not versions:
        raise UsageError(f"registered model {name!r} has no versions yet; add one with `research register RUN_ID`")
    return check_research_version(versions[-1])


def find_run_or_raise(client: Any, run_id: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if is_not_found(error):
            raise UsageError(f"run {run_id!r} not found in {client.tracking_uri}; copy the id from "
                             "`research run` output or `mlflow ui`") from None
        raise TrackingError(f"reading run {run_id!r} failed: {error.message}") from error


def run_metrics(client: Any, run_id: str | None, prefix: str = "test/") -> dict[str, float]:
    """Return the final metrics of `run_id` whose key starts with `prefix`; none for a deleted run."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}
    try:
        metrics = client.get_run(run_id).data.metrics
    except MlflowException as error:
        logger.debug("No metrics for run %s: %s", run_id, error)
        return {}
    return {key: value for key, value in sorted(metrics.items()) if key.startswith(prefix)}


# --- registering and promoting -----------------------------------------------------------------


def check_model_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise UsageError(f"invalid registered model name {name!r}: use letters, digits, '_', '.' and '-', "
                         "starting with a letter or digit (at most 200 characters)")
    return name


def ensure_registered_model(client: Any, name: str, model_name: str) -> Any:
    """Return the research registered model `name`, creating it (tagged) when it is new."""
    from mlflow.exceptions import MlflowException

    check_model_name(name)
    if name not in registered_model_names(client):
        try:
            with stage_warnings_suppressed():
                return client.create_registered_model(
                    name, tags={MODEL_TAG: model_name},
                    description=f"Versions of research model {model_name!r}, registered by `research register`.")
        except MlflowException as error:  # created by another process since the listing
            if getattr(error, "error_code", None) not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise TrackingError(f"creating registered model {name!r} failed: {error.message}") from error
    return find_registered_model_or_raise(client, name)


def download_run_checkpoint(client: Any, run_id: str, checkpoint: str, folder: Path) -> Path:
    """Download `checkpoints/<checkpoint>.pt` of a run; a missing one raises `UsageError` listing those there."""
    if checkpoint not in CHECKPOINTS:
        raise UsageError(f"invalid checkpoint {checkpoint!r}; use one of {', '.join(CHECKPOINTS)}")
    with mlflow_errors(f"listing the checkpoints of run {run_id}"):
        present = [entry.path for entry in client.list_artifacts(run_id, "checkpoints")]
    artifact_path = f"checkpoints/{checkpoint}.pt"
    if artifact_path not in present:
        found = ", ".join(present) or "no checkpoints"
        raise UsageError(f"run {run_id} has no {artifact_path} (it has {found}); only runs trained by "
                         "`research run` can be registered")
    without_progress_bars()
    with mlflow_errors(f"downloading {artifact_path} of run {run_id}"):
        return Path(client.download_artifacts(run_id, artifact_path, str(folder)))


def pip_requirements() -> list[str]:
    """Return the packages a version needs, pinned to this environment.

    Giving them spares MLflow its requirement inference, which imports the model
    in a subprocess and takes 5-9 s (MLflow 3.17). MLflow still checks them
    against the installed packages by scanning every installed distribution once
    per process (4.8 s measured on a 2-core machine under heavy load).
    """
    import mlflow
    import numpy
    import torch

    from research import __version__

    return [f"research=={__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"mlflow=={mlflow.__version__}", f"numpy=={numpy.__version__}"]


def model_signature(model_name: str) -> Any:
    """Return the pyfunc signature: image tensors in for models that take images, none for generators."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from research.models import find_model_or_raise
    from research.pyfunc_model import IMAGE_SHAPE, prediction_kind

    model_class = find_model_or_raise(model_name)
    kind = prediction_kind(model_class)
    if kind == "sample":
        return None
    images = Schema([TensorSpec(np.dtype(np.float32), (-1, *IMAGE_SHAPE))])
    if kind == "reconstruct":
        return ModelSignature(inputs=images, outputs=images)
    return ModelSignature(inputs=images)


def log_pyfunc_model(client: Any, run: Any, checkpoint_path: Path, model_name: str, checkpoint: str,
                     work_dir: Path) -> Any:
    """Log a pyfunc model holding `checkpoint_path` as a logged model of `run`; return the logged model.

    These are the steps of `mlflow.pyfunc.log_model` (MLflow 3.17) done through
    `client`, because `log_model` works on the global tracking URI and active run.
    """
    import mlflow.pyfunc
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model as MlflowModel

    from research import pyfunc_entry
    from research.pyfunc_model import CHECKPOINT_ARTIFACT

    run_id = run.info.run_id
    with mlflow_errors(f"creating a logged model for run {run_id}"):
        logged = client.create_logged_model(
            run.info.experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id,
            tags={MODEL_TAG: model_name, CHECKPOINT_TAG: checkpoint}, params=dict(run.data.params))
    try:
        client.log_outputs(run_id, models=[LoggedModelOutput(logged.model_id, step=0)])
        folder = work_dir / "mlflow-model"
        metadata = MlflowModel(artifact_path=logged.artifact_location, model_uuid=logged.model_id,
                               run_id=run_id, model_id=logged.model_id)
        with warnings.catch_warnings():
            # An input example would make MLflow load and run the model while saving it;
            # the signature already documents the input.
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            mlflow.pyfunc.save_model(str(folder), python_model=pyfunc_entry.__file__,
                                     artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_path)},
                                     signature=model_signature(model_name), pip_requirements=pip_requirements(),
                                     mlflow_model=metadata)
        client.log_model_artifacts(logged.model_id, str(folder))
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    return client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)


def slim_checkpoint(data: Mapping[str, Any]) -> dict[str, Any]:
    return {key: data[key] for key in SLIM_KEYS if key in data}


def register_run(run_id: str, name: str | None = None, checkpoint: str = "best", *,
                 client: Any = None) -> Any:
    """Add a version to registered model `name` (default: the run's model name) from a run's checkpoint.

    `checkpoint` is `best` (the best validation epoch) or `last`. Returns the
    MLflow `ModelVersion`, whose `run_id` is `run_id`.
    """
    client = client or make_client()
    started = time.perf_counter()
    if name is not None:
        check_model_name(name)
    run = find_run_or_raise(client, run_id)
    with tempfile.TemporaryDirectory(prefix="research-register-") as tmp:
        downloaded = download_run_checkpoint(client, run_id, checkpoint, Path(tmp) / "download")
        data = load_checkpoint(downloaded)
        model_name = data["model_name"]
        name = name or model_name
        ensure_registered_model(client, name, model_name)
        slim = save_checkpoint(slim_checkpoint(data), Path(tmp) / "slim" / CHECKPOINT_FILE)
        logged = log_pyfunc_model(client, run, slim, model_name, checkpoint, Path(tmp))
    with mlflow_errors(f"creating a version of {name!r}"):
        version = client.create_model_version(
            name, source=f"models:/{logged.model_id}", run_id=run_id, model_id=logged.model_id,
            tags={MODEL_TAG: model_name, CHECKPOINT_TAG: checkpoint},
            description=f"{model_name!r} from the {checkpoint} checkpoint of run {run_id}")
    logger.debug("Registered %r version %s from the %s checkpoint of run %s in %.1f s", name, version.version,
                checkpoint, run_id, time.perf_counter() - started)
    return version


def promote(name: str, version: str | int, stage: str, *, client: Any = None) -> Any:
    """Move a version to `stage` and point the alias of the same name (lower case) at it.

    Moving to staging or production archives the version that held the stage
    before. Other aliases stay where they are. Returns the updated `ModelVersion`.
    """
    client = client or make_client()
    key = check_stage(stage)
    found = find_version_or_raise(client, name, version)
    with stage_warnings_suppressed(), mlflow_errors(f"promoting {name!r} version {found.version} to {key}"):
        client.transition_model_version_stage(name, str(found.version), key.capitalize(),
                                              archive_existing_versions=key != "archived")
        client.set_registered_model_alias(name, key, str(found.version))
        promoted = client.get_model_version(name, str(found.version))
    logger.debug("Registered model %r version %s is now in stage %s with alias @%s", name, found.version,
                promoted.current_stage, key)
    return promoted


class RegisterAtEnd:
    """A runner finisher that registers the run's checkpoint before the run ends.

    The version is in `version` afterwards. Registration happens while the run
    is still RUNNING, so a failure to register ends the run FAILED.
    """

    def __init__(self, name: str, checkpoint: str = "best") -> None:
        self.name = check_model_name(name)
        self.checkpoint = checkpoint
        self.version: Any = None

    def check_target(self, client: Any = None) -> None:
        """Raise `UsageError` now when `name` belongs to a registered model research did not make."""
        client = client or make_client()
        if self.name in registered_model_names(client):
            find_registered_model_or_raise(client, self.name)

    def __call__(self, finished: Any) -> None:
        if finished.run.client is None:
            raise UsageError("registering needs a tracked run, and this run logs nothing to MLflow")
        self.version = register_run(finished.run.run_id, self.name, self.checkpoint, client=finished.run.client)
