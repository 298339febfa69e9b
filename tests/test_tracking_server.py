"""Runs through a real `mlflow server` on 127.0.0.1 with a SQLite backend and proxied artifacts.

The sweep case is covered where sweeps are tested, not here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from research.checkpoints import load_checkpoint
from tests.processes import finish, read_until, research_env, run_id_in, run_research, signal_paused, start_research

ARGS = ["run", "ae", "--train-size", "512", "--batch-size", "32", "--epochs", "3", "-p", "n_channels=4",
        "--no-explore", "--no-score"]


class Server:
    """An `mlflow server` subprocess in its own process group, restartable on the same port and store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - the server process owns it
        self.process = subprocess.Popen(
            [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=5):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        raise AssertionError("mlflow server exited:\n" + (self.folder / "server.log").read_text()[-3000:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("server"))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def env(server: Server, tmp_path: Path, real_data_dir: Path) -> dict[str, str]:
    return research_env(tmp_path, real_data_dir, server.uri)


def test_run_and_resume_through_server(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    process = start_research([*ARGS, "--run-name", "served"], tmp_path, env)
    seen = read_until(process, r"epoch 2/3:")
    signal_paused(process, signal.SIGINT)
    status, output = finish(process, seen)
    assert status == 130, output
    run_id = run_id_in(output)
    client = MlflowClient(tracking_uri=server.uri)
    assert client.get_run(run_id).info.status == "KILLED"

    status, output = run_research(["run", "--resume", run_id], tmp_path, env)
    assert status == 0, output
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.n_channels"] == "4"
    assert run.data.params["data.train_size"] == "512"
    assert sorted(metric.step for metric in client.get_metric_history(run_id, "val/loss")) == [1, 2, 3]
    assert "test/mse" in run.data.metrics
    local = Path(client.download_artifacts(run_id, "", str(tmp_path / "download")))
    for name in ("figures/loss_curve.png", "figures/reconstructions.png", "config.yaml"):
        assert (local / name).stat().st_size > 0, name
    assert load_checkpoint(local / "checkpoints" / "last.pt")["epoch"] == 3
    stored = {path.name for path in (server.folder / "artifacts").rglob("*.pt")}
    assert {"last.pt", "best.pt"} <= stored


def test_server_stopped_mid_run(server: Server, env: dict[str, str], tmp_path: Path) -> None:
    process = start_research([*ARGS, "--run-name", "orphaned"], tmp_path, env)
    seen = read_until(process, r"epoch 1/3  train/loss")
    os.kill(process.pid, signal.SIGSTOP)
    server.stop()
    os.kill(process.pid, signal.SIGCONT)
    status, output = finish(process, seen)

    assert status == 1, output
    assert "Traceback" not in output
    assert server.uri in output
    run_id = run_id_in(output)
    checkpoint = tmp_path / "cache" / "runs" / run_id / "last.pt"
    assert f"its last checkpoint is kept at {checkpoint}" in output
    assert load_checkpoint(checkpoint)["epoch"] == 1

    server.start()
    status, output = run_research(["run", "--resume", run_id], tmp_path, env)
    assert status == 0, output
    assert f"checkpoint from {checkpoint}" in output
    client = MlflowClient(tracking_uri=server.uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert sorted(metric.step for metric in client.get_metric_history(run_id, "val/loss")) == [1, 2, 3]
