"""Interrupt real `research run` processes with real signals and resume them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from research.checkpoints import load_checkpoint, save_checkpoint
from research.cli import main
from research.errors import CheckpointError
from research.runner import RunOptions, train
from research.spec import build_spec
from tests.processes import finish, read_until, research_env, run_id_in, run_research, signal_paused, start_research

ARGS = ["run", "ae", "--train-size", "512", "--batch-size", "16", "--epochs", "3", "-p", "n_channels=4",
        "--seed", "3", "--no-explore", "--no-score"]
COMPARED = ("train/loss", "val/loss", "lr")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> dict:
    """A folder with its own SQLite store and cache, and an uninterrupted reference run in it."""
    folder = tmp_path_factory.mktemp("resume")
    env = research_env(folder, real_data_dir)
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    status, output = run_research([*ARGS, "--run-name", "reference"], folder, env)
    assert status == 0, output
    return {"folder": folder, "env": env, "client": client, "reference": run_id_in(output)}


def metric_by_step(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {metric.step: metric.value for metric in client.get_metric_history(run_id, key)}


def assert_same_metrics(client: MlflowClient, run_id: str, reference_id: str) -> None:
    for key in COMPARED:
        resumed = metric_by_step(client, run_id, key)
        expected = metric_by_step(client, reference_id, key)
        assert sorted(resumed) == [1, 2, 3], key
        for step, value in expected.items():
            assert resumed[step] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, step)
    test_mse = client.get_run(run_id).data.metrics["test/mse"]
    assert test_mse == pytest.approx(client.get_run(reference_id).data.metrics["test/mse"], rel=1e-6)


def test_sigint_mid_epoch_then_resume_matches(store: dict) -> None:
    folder, env, client = store["folder"], store["env"], store["client"]
    process = start_research([*ARGS, "--run-name", "interrupted"], folder, env)
    seen = read_until(process, r"epoch 2/3:")
    signal_paused(process, signal.SIGINT)
    status, output = finish(process, seen)

    assert status == 130, output
    assert "Traceback" not in output
    run_id = run_id_in(output)
    assert f"research run --resume {run_id}" in output
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert "SIGINT" in run.data.tags["research.end_reason"]
    local = folder / "cache" / "runs" / run_id / "last.pt"
    assert str(local) in output
    loop_state = load_checkpoint(local)["loop_state"]
    assert loop_state["epoch"] == 1
    assert loop_state["step_in_epoch"] > 0

    status, output = run_research(["run", "--resume", run_id], folder, env)
    assert status == 0, output
    assert "Resuming at epoch 2" in output
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "research.end_reason" not in run.data.tags
    assert run.data.tags["research.resumes"] == "1"
    assert_same_metrics(client, run_id, store["reference"])
    artifacts = {entry.path for entry in client.list_artifacts(run_id, "checkpoints")}
    assert artifacts == {"checkpoints/best.pt", "checkpoints/last.pt"}
    assert not local.parent.exists()


def test_sigkill_then_resume_matches(store: dict) -> None:
    folder, env, client = store["folder"], store["env"], store["client"]
    process = start_research([*ARGS, "--run-name", "killed"], folder, env)
    seen = read_until(process, r"epoch 2/3:")
    process.kill()
    process.wait()
    run_id = next(run.info.run_id for run in client.search_runs(
        [client.get_experiment_by_name("ae").experiment_id], "attributes.run_name = 'killed'"))
    assert client.get_run(run_id).info.status == "RUNNING", seen

    status, output = run_research(["run", "--resume", run_id], folder, env)
    assert status == 0, output
    assert "Resuming at epoch 2, step 0" in output
    assert client.get_run(run_id).info.status == "FINISHED"
    assert_same_metrics(client, run_id, store["reference"])


def test_sigterm_kills_run_and_live_run_not_resumable(store: dict) -> None:
    folder, env, client = store["folder"], store["env"], store["client"]
    process = start_research([*ARGS, "--run-name", "terminated"], folder, env)
    seen = read_until(process, r"epoch 1/3:")
    os.kill(process.pid, signal.SIGSTOP)
    run_id = next(run.info.run_id for run in client.search_runs(
        [client.get_experiment_by_name("ae").experiment_id], "attributes.run_name = 'terminated'"))
    status, output = run_research(["run", "--resume", run_id], folder, env)
    assert status == 2, output
    assert f"still training in process {process.pid}" in output

    os.kill(process.pid, signal.SIGTERM)
    os.kill(process.pid, signal.SIGCONT)
    status, output = finish(process, seen)
    assert status == 143, output
    assert "Traceback" not in output
    assert f"research run --resume {run_id}" in output
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert "SIGTERM" in run.data.tags["research.end_reason"]


def test_second_sigint_stops_at_once(store: dict) -> None:
    folder, env, client = store["folder"], store["env"], store["client"]
    # One slow step per epoch, so the second signal lands while the first step still runs.
    process = start_research(["run", "ae", "--train-size", "1024", "--batch-size", "1024", "--epochs", "2",
                              "-p", "n_channels=16", "--run-name", "twice", "--no-explore", "--no-score"], folder, env)
    seen = read_until(process, r"epoch 1/2:")
    signal_paused(process, signal.SIGINT)
    seen = read_until(process, "SIGINT received") if "SIGINT received" not in seen else seen
    os.kill(process.pid, signal.SIGINT)
    status, output = finish(process, seen)

    assert status == 130, output
    assert "Traceback" not in output
    run_id = run_id_in(output)
    assert f"research run --resume {run_id}" in output
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert "second SIGINT" in run.data.tags["research.end_reason"]


# --- resuming with other options, on runs that failed in this process ------------------------


def fail_after_first_epoch(epoch: int, record: object) -> None:
    raise RuntimeError("stopped by the test after epoch 1")


def failed_run(**overrides: object) -> str:
    """Train 2 epochs of a tiny autoencoder that fails after epoch 1; return its run id."""
    spec = build_spec("ae", {"train_size": 512, "n_epochs": 2, "n_channels": 4, "batch_size": 64, **overrides})
    with pytest.raises(RuntimeError) as raised:
        train(spec, RunOptions(device="cpu", quiet=True, callbacks=[fail_after_first_epoch]))
    run_id = run_id_in("\n".join(raised.value.__notes__))
    assert "research run --resume" in raised.value.__notes__[0]
    return run_id


@pytest.mark.parametrize("args,words", [
    (["-p", "lr=0.1"], ["train.lr 0.0091 -> 0.1", "cannot change"]),
    (["--batch-size", "32"], ["train.batch_size 64 -> 32"]),
    (["--seed", "5"], ["seed 0 -> 5"]),
    (["--train-size", "1024"], ["data.train_size 512 -> 1024"]),
    (["--epochs", "1"], ["below the run's target of 2"]),
    (["--experiment", "other"], ["--experiment cannot be given with --resume"]),
    (["gan"], ["trains model 'ae', not 'gan'"]),
])
def test_resume_rejects_changes(workdir: Path, with_real_data: Path, args: list[str], words: list[str]) -> None:
    run_id = failed_run()
    result = CliRunner().invoke(main, ["run", "--resume", run_id, *args])
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.output
    assert MlflowClient().get_run(run_id).info.status == "FAILED"


def test_onecycle_run_cannot_extend(workdir: Path, with_real_data: Path) -> None:
    run_id = failed_run(scheduler="onecycle")
    result = CliRunner().invoke(main, ["run", "--resume", run_id, "--epochs", "3"])
    assert result.exit_code == 2, result.output
    assert "onecycle" in result.output


@pytest.mark.parametrize("scheduler", ["none", "cosine"])
def test_resume_with_more_epochs(workdir: Path, with_real_data: Path, scheduler: str) -> None:
    run_id = failed_run(scheduler=scheduler)
    result = CliRunner().invoke(main, ["run", "--resume", run_id, "--epochs", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.n_epochs"] == "2"
    assert run.data.tags["research.n_epochs"] == "3"
    lr = metric_by_step(client, run_id, "lr")
    assert sorted(lr) == [1, 2, 3]
    if scheduler == "cosine":
        assert lr[1] > lr[2] > lr[3] > 0.0

    again = CliRunner().invoke(main, ["run", "--resume", run_id])
    assert again.exit_code == 2
    assert "FINISHED" in again.output


def test_unknown_run_id_is_usage_error(workdir: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--resume", "0123abc"])
    assert result.exit_code == 2, result.output
    assert "no MLflow run '0123abc'" in result.output


# --- checkpoints that cannot be half-written ---------------------------------------------------

WRITER = """
import sys, torch
from research.checkpoints import save_checkpoint
save_checkpoint({"model_name": "big", "config": {}, "model_state": {"w": torch.ones(32_000_000)}}, sys.argv[1])
"""


def test_kill_during_write_keeps_previous(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"model_name": "ae", "config": {"latent_dim": 3}, "model_state": {}}, path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env)
    # Kill the writer once its temporary file has data in it, that is, in the middle of the write.
    while writer.poll() is None:
        partial = [entry for entry in tmp_path.iterdir() if entry.name.endswith(".tmp") and entry.stat().st_size]
        if partial:
            writer.kill()
            break
        time.sleep(0.005)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL, "the writer finished before it could be killed"
    assert load_checkpoint(path)["config"] == {"latent_dim": 3}


def test_truncated_checkpoint_names_file(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"model_name": "ae", "config": {}, "model_state": {"w": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


class Foreign:
    """A class that only unpickling with code execution could rebuild."""


@pytest.mark.parametrize("content", [{"weights": torch.ones(3)}, Foreign(), b"not a zip"])
def test_foreign_checkpoint_names_file(tmp_path: Path, content: object) -> None:
    path = tmp_path / "other.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
