"""Find the checkpoint that a run starts from: a run id, a checkpoint path or a `models:/` URI.

A run id names an MLflow run in the current store and means its
`checkpoints/best.pt` artifact. A `models:/NAME/VERSION`, `models:/NAME/STAGE`
or `models:/NAME@ALIAS` URI names a registered model version, whose source run
supplies that same artifact.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from research.checkpoints import load_checkpoint
from research.errors import UsageError

logger = logging.getLogger(__name__)

CHECKPOINT_ARTIFACT = "checkpoints/best.pt"
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))/?$")
# Called with a run's model name and a description of the run; raises to reject it.
ModelNameCheck = Callable[[str, str], None]


@dataclass(frozen=True)
class SourceCheckpoint:
    """A checkpoint found from a `--from` value, with the run that wrote it when known."""

    source: str
    checkpoint: dict[str, Any]
    run_id: str | None

    @property
    def model_name(self) -> str:
        return str(self.checkpoint["model_name"])


def load_source_checkpoint(source: str, model_name_check: ModelNameCheck | None = None) -> SourceCheckpoint:
    """Load the checkpoint that `source` names.

    `model_name_check(model_name, where)` may reject the run's model before its
    checkpoint is downloaded. Raises `UsageError` for a source that names no
    file, run or registered model version.
    """
    if source.startswith("models:/"):
        return load_run_checkpoint(source, run_id_of_model_uri(source), model_name_check)
    path = Path(source).expanduser()
    if path.is_file():
        checkpoint = load_checkpoint(path)
        run_id = checkpoint.get("run_id")
        return SourceCheckpoint(source, checkpoint, run_id if run_id and run_id != "offline" else None)
    return load_run_checkpoint(source, source, model_name_check)


def load_run_checkpoint(source: str, run_id: str, model_name_check: ModelNameCheck | None,
                        option: str = "--from") -> SourceCheckpoint:
    """Download and load a run's best checkpoint; `option` names the argument in error messages."""
    from mlflow.exceptions import MlflowException

    from research.tracking import make_client, tracking_uri

    client = make_client()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UsageError(f"{option} {source!r}: no checkpoint file and no MLflow run {run_id!r} in the store "
                         f"{tracking_uri()}; pass a run id from `mlflow ui`, a checkpoint path or a "
                         "models:/NAME/VERSION URI") from None
    model_name = run.data.tags.get("research.model") or run.data.params.get("model_name")
    if model_name_check is not None and model_name:
        model_name_check(model_name, f"run {run_id}")
    with tempfile.TemporaryDirectory(prefix="research-source-") as folder:
        try:
            local = client.download_artifacts(run_id, CHECKPOINT_ARTIFACT, folder)
        except (MlflowException, OSError):
            raise UsageError(f"{option} {source!r}: run {run_id} has no {CHECKPOINT_ARTIFACT} artifact; "
                             "pass a run that finished at least one epoch") from None
        checkpoint = load_checkpoint(local)
    logger.info("Starting from %s of run %s (%s)", CHECKPOINT_ARTIFACT, run_id, checkpoint["model_name"])
    return SourceCheckpoint(source, checkpoint, run_id)


def run_id_of_model_uri(uri: str) -> str:
    """Return the run id behind a registered model version URI."""
    from mlflow.exceptions import MlflowException

    from research.tracking import make_client

    match = MODEL_URI.match(uri)
    if match is None:
        raise UsageError(f"--from {uri!r} is not a registered model URI; use models:/NAME/VERSION, "
                         "models:/NAME/STAGE or models:/NAME@ALIAS")
    client = make_client()
    name, version, alias = match["name"], match["version"], match["alias"]
    try:
        if alias is not None:
            found = client.get_model_version_by_alias(name, alias)
        elif version.isdigit():
            found = client.get_model_version(name, version)
        else:
            latest = client.get_latest_versions(name, stages=[version])
            if not latest:
                raise UsageError(f"--from {uri!r}: registered model {name!r} has no version in stage "
                                 f"{version!r}")
            found = latest[0]
    except MlflowException as error:
        raise UsageError(f"--from {uri!r}: registered model version not found "
                         f"({str(error).splitlines()[0]})") from None
    if not found.run_id:
        raise UsageError(f"--from {uri!r}: version {found.version} of {name!r} records no source run, "
                         "so its checkpoint cannot be found; register a version created from a research run")
    return str(found.run_id)
