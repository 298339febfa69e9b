"""MLflow runs: where they are stored, what they log, and how they end.

A `Run` wraps one MLflow run through `MlflowClient` with an explicit run id, so
nested sweep trials and several runs in one process never share the fluent
API's global active run. `OfflineRun` has the same interface and logs nothing,
for measuring training without tracking.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from research.errors import TrackingError, UsageError

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on one param value
PROBE_TIMEOUT_S = 5.0  # how long a tracking server may take to respond to the health check


def tracking_uri() -> str:
    """Return `MLFLOW_TRACKING_URI` when set, else the SQLite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def check_tracking_store(uri: str | None = None) -> None:
    """Raise `TrackingError` when the store at `uri` cannot be written or does not respond.

    Runs before a run starts, so that a dead server or a read-only folder fails
    within seconds instead of after MLflow's retries or mid-run.
    """
    uri = uri or tracking_uri()
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        probe_server(uri)
    elif scheme == "sqlite":
        # MLflow keeps the artifacts of a SQLite store in ./mlruns unless the experiment sets another artifact location.
        check_folder_writable(Path.cwd(), "the working directory, where MLflow writes ./mlruns,")
        database = uri.removeprefix("sqlite:///")
        if database and database != ":memory:":
            check_folder_writable(Path(database).resolve().parent, f"the MLflow store {uri}")


def probe_server(uri: str) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # the server responded, even if /health is not served there
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(f"MLflow tracking server {uri} does not respond ({reason}); start it, or set "
                            "MLFLOW_TRACKING_URI to a store that works") from None


def check_folder_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise TrackingError(f"cannot write to {what} in {folder}: {error.strerror or error}; run research in a "
                            "writable folder or set MLFLOW_TRACKING_URI to a writable store") from None


def make_client(uri: str | None = None) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri or tracking_uri())


class Run:
    """One MLflow run, addressed by id; every call logs straight to the store."""

    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.tracking_seconds = 0.0  # time spent in MLflow calls, for overhead reports

    @classmethod
    def start(cls, experiment: str, run_name: str | None = None, tags: Mapping[str, str] | None = None,
              *, client: Any = None, parent_run_id: str | None = None) -> Run:
        """Create a run in `experiment`, creating the experiment when it is new."""
        client = client or make_client()
        try:
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else client.create_experiment(experiment)
            all_tags = dict(tags or {})
            if parent_run_id:
                all_tags["mlflow.parentRunId"] = parent_run_id
            created = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        except Exception as error:
            raise TrackingError(f"cannot start an MLflow run in experiment {experiment!r} at "
                                f"{client.tracking_uri}: {error}") from error
        return cls(client, created.info.run_id, experiment_id)

    @classmethod
    def open(cls, run_id: str, *, client: Any = None) -> Run:
        """Address an existing run without changing it; raise `UsageError` when there is none."""
        from mlflow.exceptions import MlflowException

        client = client or make_client()
        try:
            found = client.get_run(run_id)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise TrackingError(f"cannot read MLflow run {run_id} at {client.tracking_uri}: {error}") from None
            raise UsageError(f"no MLflow run {run_id!r} at {client.tracking_uri}; check the run id and "
                             "MLFLOW_TRACKING_URI") from None
        return cls(client, run_id, found.info.experiment_id)

    @classmethod
    def resume(cls, run_id: str, *, client: Any = None) -> Run:
        """Reopen an existing run so that it can log again."""
        run = cls.open(run_id, client=client)
        run._call("update_run", status="RUNNING")
        return run

    def fetch(self) -> Any:
        """Return the run as MLflow stores it now (`info`, `data.params`, `data.tags`)."""
        return self._call("get_run")

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return getattr(self.client, method)(self.run_id, *args, **kwargs)
        except Exception as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise TrackingError(f"MLflow {method} for run {self.run_id} at {self.client.tracking_uri} "
                                f"failed: {first_line}") from error
        finally:
            self.tracking_seconds += time.perf_counter() - started

    def download_artifact(self, artifact_path: str, folder: str | Path) -> Path | None:
        """Download one artifact into `folder`; return None when the run has no such artifact."""
        directory, _, name = artifact_path.rpartition("/")
        listed = self._call("list_artifacts", directory or None)
        if not any(entry.path == artifact_path for entry in listed):
            return None
        return Path(self._call("download_artifacts", artifact_path, str(folder)))

    def delete_tag(self, key: str) -> None:
        if key in self.fetch().data.tags:
            self._call("delete_tag", key)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        entries = [Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items()]
        # MLflow takes at most 100 params per batch.
        for start in range(0, len(entries), 100):
            self._call("log_batch", params=entries[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(entries), 1000):
            self._call("log_batch", metrics=entries[start:start + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._call("log_batch", tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib figure as a PNG and close it."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        plt.close(figure)
        self.log_bytes(buffer.getvalue(), artifact_file)

    def log_image(self, image: Any, artifact_file: str, **save_options: Any) -> None:
        """Log a PIL image; the file extension picks the format (PNG, GIF)."""
        buffer = io.BytesIO()
        image.save(buffer, format=Path(artifact_file).suffix.lstrip(".").upper(), **save_options)
        self.log_bytes(buffer.getvalue(), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.log_bytes(text.encode("utf-8"), artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        directory, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory(prefix="research-artifact-") as tmp:
            local = Path(tmp) / name
            local.write_bytes(data)
            self.log_file(local, directory or None)

    def log_file(self, local_path: str | Path, artifact_dir: str | None = None) -> None:
        self._call("log_artifact", str(local_path), artifact_dir)

    def metric_history(self, key: str) -> list[tuple[int, float]]:
        """Return the (step, value) pairs logged for `key`, ordered by step; empty when none."""
        metrics = self._call("get_metric_history", key) or []
        return sorted((metric.step, metric.value) for metric in metrics)

    def end(self, status: str = "FINISHED") -> bool:
        """Mark the run FINISHED, FAILED or KILLED; return False when the store did not take it."""
        try:
            self._call("set_terminated", status=status)
        except Exception as error:  # noqa: BLE001 - the run is over either way; say why it stays open
            logger.error("Could not mark MLflow run %s %s: %s", self.run_id, status, error)
            return False
        return True

    def ui_hint(self) -> str:
        return f"experiment {self.experiment_id}, run {self.run_id}"


class OfflineRun(Run):
    """A run that logs nothing: the same calls as `Run`, without MLflow."""

    def __init__(self) -> None:
        super().__init__(client=None, run_id="offline", experiment_id="offline")

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return None

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        plt.close(figure)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        return None


def quiet_mlflow_warnings() -> None:
    """Silence MLflow warnings that concern its internals, not the user's run."""
    # MLflow configures its own logger from this variable when it is first imported.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # Its download bar would break into the CLI's own output when a resume fetches a checkpoint.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", module=r"mlflow(\..*)?")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
