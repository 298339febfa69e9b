"""Real sweeps on a FashionMNIST subset: tracking, failures, resume after SIGKILL, parallel workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from research.cli import main
from research.sweeps import load_sweep_file
from research.sweeps.storage import with_installed_driver
from research.sweeps.parent import ensure_parent_run
from research.sweeps.study import SweepJob, open_study
from research.sweeps.worker import recover_stale_trials
from tests.sweep_helpers import cli_command, load_trials, states, subprocess_env, write_sweep

TINY_RUN = ["--train-size", "512", "--heartbeat", "1"]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> dict:
    """A 4-trial sweep whose first trial is queued with a learning rate that makes the loss non-finite."""
    folder = tmp_path_factory.mktemp("sweep")
    patch = pytest.MonkeyPatch()
    patch.chdir(folder)
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    patch.setenv("RESEARCH_CACHE_DIR", str(folder / "cache"))
    patch.setenv("RESEARCH_DATA_DIR", str(real_data_dir))
    storage = f"sqlite:///{folder / 'optuna.db'}"
    definition = load_sweep_file(write_sweep(folder / "sweeps"))
    study = open_study(SweepJob(definition=definition, storage=storage, study_name="tiny", n_trials=4,
                                n_epochs=2, experiment="sweep-tiny"), create=True)
    study.enqueue_trial({"n_channels": 2, "latent_dim": 2, "lr": 1.0e6, "optimizer": "sgd"},
                        skip_if_exists=False)

    result = CliRunner().invoke(main, ["sweep", "run", "tiny", *TINY_RUN])
    status = CliRunner().invoke(main, ["sweep", "status", "tiny"])
    best = CliRunner().invoke(main, ["sweep", "best", "tiny"])
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("sweep-tiny").experiment_id])
    yield {"result": result, "status": status, "best": best, "client": client, "runs": runs,
           "trials": load_trials(storage), "folder": folder}
    patch.undo()


def test_sweep_reaches_target(finished_sweep: dict) -> None:
    result = finished_sweep["result"]
    assert result.exit_code == 0, result.output
    counts = states(finished_sweep["trials"])
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 4
    assert counts.get("COMPLETE", 0) >= 1
    assert "RUNNING" not in counts


def test_nonfinite_trial_fails_and_sweep_goes_on(finished_sweep: dict) -> None:
    first = finished_sweep["trials"][0]
    assert first.params["lr"] == 1.0e6
    assert first.state.name == "FAIL"
    assert "NonFiniteLossError" in first.user_attrs["fail_reason"]
    run = finished_sweep["client"].get_run(first.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["research.trial_state"] == "FAIL"


def test_trials_and_runs_linked(finished_sweep: dict) -> None:
    runs = finished_sweep["runs"]
    parents = [run for run in runs if run.data.tags.get("research.sweep_role") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = {run.info.run_id: run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert len(children) == len(finished_sweep["trials"]) == len(runs) - 1
    for trial in finished_sweep["trials"]:
        child = children[trial.user_attrs["mlflow_run_id"]]
        assert child.data.tags["research.trial_number"] == str(trial.number)
        assert child.data.tags["research.study"] == "tiny"
        assert child.data.tags["research.trial_state"] == trial.state.name
        assert child.data.params["train.n_epochs"] == "2"
        assert child.data.params["model.n_channels"] == str(trial.params["n_channels"])


def test_pruned_and_complete_run_status(finished_sweep: dict) -> None:
    client = finished_sweep["client"]
    for trial in finished_sweep["trials"]:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        expected = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}[trial.state.name]
        assert run.info.status == expected
        if trial.state.name == "COMPLETE":
            # The trial's value is val/loss at the best epoch, the one the checkpoint keeps.
            history = client.get_metric_history(run.info.run_id, "val/loss")
            assert trial.value == pytest.approx(min(metric.value for metric in history))


def test_parent_holds_study_artifacts(finished_sweep: dict) -> None:
    client = finished_sweep["client"]
    parent = next(run for run in finished_sweep["runs"] if run.data.tags.get("research.sweep_role") == "parent")
    assert parent.info.status == "FINISHED"
    names = {artifact.path for artifact in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "best_params.json", "sweep.json", "figures"} <= names
    figures = {artifact.path for artifact in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/optimization_history.png" in figures
    assert "figures/slice.png" in figures
    best = [trial for trial in finished_sweep["trials"] if trial.state.name == "COMPLETE"]
    best_value = min(trial.value for trial in best)
    assert parent.data.metrics["best/value"] == pytest.approx(best_value)
    local = client.download_artifacts(parent.info.run_id, "best_params.json", str(finished_sweep["folder"]))
    assert json.loads(Path(local).read_text())["value"] == pytest.approx(best_value)


def test_status_and_best_commands(finished_sweep: dict) -> None:
    status, best = finished_sweep["status"], finished_sweep["best"]
    assert status.exit_code == 0, status.output
    assert "4 of 4 trials finished" in status.output
    assert "FAIL      1" in status.output
    assert best.exit_code == 0, best.output
    assert best.output.startswith("research run ae -p batch_size=128 -p val_fraction=0.02 -p batch_norm=")
    assert "-p scheduler=none -p n_channels=" in best.output


def test_resume_after_sigkill(workdir: Path, real_data_dir: Path) -> None:
    write_sweep(workdir / "sweeps", n_trials=3, pruner={"type": "none"})
    env = subprocess_env(workdir, real_data_dir)
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    command = cli_command("sweep", "run", "tiny", *TINY_RUN)
    worker = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not mid_trial(storage):
        assert worker.poll() is None, worker.stderr.read().decode()
        time.sleep(0.5)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert states(load_trials(storage)).get("RUNNING") == 1

    resumed = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    trials = load_trials(storage)
    counts = states(trials)
    assert counts.get("COMPLETE", 0) == 3
    assert counts.get("FAIL") == 1
    assert "RUNNING" not in counts
    assert "Marked 1 stale trial(s) FAIL" in resumed.stderr
    killed = next(trial for trial in trials if trial.state.name == "FAIL")
    retried = [trial for trial in trials if trial.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1
    assert retried[0].params == killed.params
    client = MlflowClient()
    killed_run = client.get_run(killed.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED"
    parents = client.search_runs([client.get_experiment_by_name("sweep-tiny").experiment_id],
                                 filter_string="tags.`research.sweep_role` = 'parent'")
    assert len(parents) == 1


def mid_trial(storage: str) -> bool:
    """Tell whether a trial has reported its first epoch and is still running."""
    try:
        trials = load_trials(storage)
    except (KeyError, ValueError):  # the study does not exist yet
        return False
    return any(trial.state.name == "RUNNING" and trial.intermediate_values for trial in trials)


def run_two_workers(workdir: Path, real_data_dir: Path, storage: str, study_name: str) -> None:
    write_sweep(workdir / "sweeps", n_trials=3, pruner={"type": "none"})
    command = cli_command("sweep", "run", "tiny", "--workers", "2", "--storage", storage,
                          "--study-name", study_name, *TINY_RUN)
    done = subprocess.run(command, cwd=workdir, env=subprocess_env(workdir, real_data_dir), capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "database is locked" not in done.stderr
    assert "Traceback" not in done.stderr

    trials = optuna.load_study(study_name=study_name, storage=with_installed_driver(storage)).trials
    finished = [trial for trial in trials if trial.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 3
    assert "RUNNING" not in states(trials)
    assert len({trial.number for trial in trials}) == len(trials)
    # Each worker draws from its own seeded sampler, so no two trials share parameters.
    assert len({tuple(sorted(trial.params.items())) for trial in trials}) == len(trials)
    run_ids = [trial.user_attrs["mlflow_run_id"] for trial in finished]
    assert len(set(run_ids)) == 3
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(f"sweep-{study_name}").experiment_id])
    assert len([run for run in runs if run.data.tags.get("research.sweep_role") == "parent"]) == 1
    assert {run.info.run_id for run in runs if run.data.tags.get("research.trial_state") == "COMPLETE"} == \
        set(run_ids)


def test_two_workers_on_sqlite(workdir: Path, real_data_dir: Path) -> None:
    run_two_workers(workdir, real_data_dir, f"sqlite:///{workdir / 'optuna.db'}", "tiny")


POSTGRES_URL = os.environ.get("RESEARCH_TEST_POSTGRES_URL")


@pytest.mark.skipif(not POSTGRES_URL, reason="RESEARCH_TEST_POSTGRES_URL is not set; "
                                             "scripts/start-postgres.sh starts a server and prints it")
def test_two_workers_on_postgres(workdir: Path, real_data_dir: Path) -> None:
    run_two_workers(workdir, real_data_dir, POSTGRES_URL, f"tiny-{uuid.uuid4().hex[:8]}")


def test_run_of_trial_failed_by_optuna_ends(workdir: Path) -> None:
    # Optuna marks a stale trial FAIL by itself when a worker starts a new trial.
    # The worker's next check must still end that trial's MLflow run.
    definition = load_sweep_file(write_sweep(workdir / "sweeps"))
    job = SweepJob(definition=definition, storage=f"sqlite:///{workdir / 'optuna.db'}", study_name="tiny",
                   n_trials=4, n_epochs=2, experiment="sweep-tiny", heartbeat_s=1)
    study = open_study(job, create=True)
    job.parent_run_id = ensure_parent_run(study, job).run_id
    trial = study.ask()
    study._storage.record_heartbeat(trial._trial_id)
    client = MlflowClient()
    run = client.create_run(client.get_experiment_by_name("sweep-tiny").experiment_id, tags={
        "research.study": "tiny", "research.trial_number": str(trial.number),
        "mlflow.parentRunId": job.parent_run_id})
    time.sleep(5)  # more than three missed heartbeats of 1 s

    optuna.storages.fail_stale_trials(study)
    assert study.trials[0].state.name == "FAIL"
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    recover_stale_trials(study, job)

    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "FAILED"
    assert ended.data.tags["research.trial_state"] == "FAIL"
