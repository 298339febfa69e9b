"""Find where a stopped run continues: its newest checkpoint and the spec it was started with.

A run's checkpoints exist twice: in MLflow (`checkpoints/last.pt`, uploaded after
every epoch and on an interrupt) and in a local folder kept until the run
finishes. The local copy is newer when uploading failed, for example because
the tracking server stopped, so both are read and the one further along wins.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from research.checkpoints import load_checkpoint
from research.data import cache_dir
from research.errors import CheckpointError, UsageError
from research.spec import GROUPS, RunSpec, build_spec
from research.tracking import Run, check_tracking_store

logger = logging.getLogger(__name__)

OWNER_FILE = "owner.json"  # host and process id of the process training the run


def local_checkpoint_dir(run_id: str) -> Path:
    """Return the folder that keeps a run's checkpoints on this machine until it finishes."""
    return cache_dir() / "runs" / run_id


def resume_command(run_id: str) -> str:
    return f"research run --resume {run_id}"


@dataclass
class ResumePoint:
    """A stopped run and the state it continues from; `checkpoint` None means from the first epoch."""

    run_id: str
    spec: RunSpec
    checkpoint: dict[str, Any] | None
    checkpoint_source: str
    logged_n_epochs: int
    n_resumes: int


def write_owner(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))


def live_owner_pid(run_id: str) -> int | None:
    """Return the id of a live process on this host that trains `run_id`, if there is one."""
    try:
        owner = json.loads((local_checkpoint_dir(run_id) / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if owner.get("host") != socket.gethostname() or owner.get("pid") == os.getpid():
        return None
    try:
        os.kill(int(owner["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return None
    except PermissionError:
        pass  # the process exists but belongs to another user
    return int(owner["pid"])


def check_resumable(run_id: str, status: str) -> None:
    if status == "FINISHED":
        raise UsageError(f"run {run_id} has FINISHED, so there is nothing to resume; start a new run "
                         "(`research run MODEL`) to train again")
    if status == "RUNNING":
        pid = live_owner_pid(run_id)
        if pid is not None:
            raise UsageError(f"run {run_id} is still training in process {pid} on this machine; "
                             f"stop it first (kill -INT {pid})")
        logger.warning("Run %s is marked RUNNING but no process on this machine trains it (killed with "
                       "SIGKILL?); resuming it", run_id)


def find_resume_point(run_id: str) -> ResumePoint:
    """Read a stopped run and its newest checkpoint; change nothing yet."""
    check_tracking_store()
    run = Run.open(run_id)
    found = run.fetch()
    check_resumable(run_id, found.info.status)
    logged_n_epochs = int(found.data.params.get("train.n_epochs", 0))
    n_resumes = int(found.data.tags.get("research.resumes", 0))
    with tempfile.TemporaryDirectory(prefix="research-resume-") as folder:
        checkpoint, source = newest_checkpoint(run, Path(folder))
        if checkpoint is not None:
            spec = RunSpec.from_dict(checkpoint["run_spec"])
        else:
            spec = logged_spec(run, Path(folder))
    return ResumePoint(run_id, spec, checkpoint, source, logged_n_epochs, n_resumes)


def newest_checkpoint(run: Run, folder: Path) -> tuple[dict[str, Any] | None, str]:
    candidates: list[tuple[dict[str, Any], str]] = []
    local = local_checkpoint_dir(run.run_id) / "last.pt"
    if local.exists():
        candidates.append((load_checkpoint(local), str(local)))
    downloaded = run.download_artifact("checkpoints/last.pt", folder)
    if downloaded is not None:
        candidates.append((load_checkpoint(downloaded), f"MLflow artifact checkpoints/last.pt of run {run.run_id}"))
    for checkpoint, source in candidates:
        if checkpoint.get("run_id") != run.run_id or "loop_state" not in checkpoint:
            raise CheckpointError(f"{source} belongs to run {checkpoint.get('run_id')!r}, not {run.run_id}, or "
                                  "holds no training state; remove it to resume from the other copy")
    if not candidates:
        return None, "none"
    # The local copy comes first, so it wins a tie.
    return max(candidates, key=lambda candidate: candidate[0]["loop_state"]["global_step"])


def logged_spec(run: Run, folder: Path) -> RunSpec:
    path = run.download_artifact("config.yaml", folder)
    if path is None:
        raise UsageError(f"run {run.run_id} has neither a checkpoint nor config.yaml, so it was not started by "
                         "`research run` or failed before training; start a new run")
    return RunSpec.from_dict(yaml.safe_load(path.read_text()))


def resumed_spec(point: ResumePoint, overrides: Mapping[str, Any], seed: int | None) -> RunSpec:
    """Apply overrides given on resume to the run's spec; only a larger `n_epochs` may change.

    Raises `UsageError` listing every other changed value, because MLflow
    params cannot change once logged.
    """
    stored = point.spec
    values = {f"{group}.{name}": value for group in GROUPS
              for name, value in getattr(stored, group).to_dict().items()}
    spec = build_spec(stored.model_name, {**values, **overrides}, seed=stored.seed if seed is None else seed)
    old, new = stored.params(), spec.params()
    changed = [f"{key} {old[key]} -> {new[key]}" for key in old if old[key] != new[key] and key != "train.n_epochs"]
    if changed:
        raise UsageError(f"run {point.run_id} cannot change {', '.join(changed)} on resume, because MLflow params "
                         "are fixed once logged; resume without them, or start a new run with the new values")
    if spec.train.n_epochs < stored.train.n_epochs:
        raise UsageError(f"--epochs {spec.train.n_epochs} is below the run's target of {stored.train.n_epochs} "
                         "epochs; resume with that target or a larger one")
    if spec.train.n_epochs > stored.train.n_epochs and spec.train.scheduler == "onecycle":
        raise UsageError(f"run {point.run_id} uses the onecycle schedule, which is fixed to "
                         f"{stored.train.n_epochs} epochs (its rate has annealed to nearly 0 at the end); "
                         "resume without --epochs, or start a new run with more epochs")
    return spec
