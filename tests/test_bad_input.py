"""Bad input gives one clear message and the right exit status, never a traceback without --debug."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from research.cli import main
from tests.processes import research_env, run_id_in, run_research

TINY = ["--train-size", "512", "--epochs", "1", "-p", "n_channels=4", "--batch-size", "64", "--quiet", "--no-explore",
        "--no-score"]


@pytest.mark.parametrize("args,words", [
    (["run", "ae", "-p", "lr=-0.1"], ["lr", "must be > 0.0"]),
    (["run", "ae", "-p", "latent_dim=0"], ["latent_dim", "must be >= 1"]),
    (["run", "ae", "--train-size", "512", "--batch-size", "600"],
     ["batch_size 600 is larger than the 512 training images", "--train-size"]),
    (["run", "ae", "-p", "n_channels=512", "--batch-size", "48000"],
     ["n_channels=512", "batch_size 48000", "needs an estimated", "GiB", "lower the channel count"]),
    (["run"], ["missing MODEL", "--resume"]),
    (["run", "ae", "--epochs", "0"], ["--epochs", "0"]),
])
def test_usage_errors_exit_2(workdir: Path, with_real_data: Path, args: list[str], words: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    for word in words:
        assert word in result.output
    assert MlflowClient().search_experiments(filter_string="name = 'ae'") == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections and never responds."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def mount_tmpfs(folder: Path, options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    mounted: list[Path] = []
    yield mounted
    for folder in mounted:
        subprocess.run(["umount", str(folder)], check=True)


def test_dead_server_fails_fast(tmp_path: Path, real_data_dir: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    status, output = run_research(["run", "ae", *TINY], tmp_path, research_env(tmp_path, real_data_dir, uri))
    assert status == 1, output
    assert f"MLflow tracking server {uri} does not respond" in output
    assert "Traceback" not in output


def test_silent_server_times_out(tmp_path: Path, real_data_dir: Path, silent_server: str) -> None:
    env = research_env(tmp_path, real_data_dir, silent_server)
    status, output = run_research(["run", "ae", *TINY], tmp_path, env)
    assert status == 1, output
    assert f"MLflow tracking server {silent_server} does not respond (timed out)" in output
    assert "Traceback" not in output


def test_debug_shows_traceback(tmp_path: Path, real_data_dir: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    status, output = run_research(["--debug", "run", "ae", *TINY], tmp_path,
                                  research_env(tmp_path, real_data_dir, uri))
    assert status == 1, output
    assert "Traceback" in output
    assert "TrackingError" in output


def test_read_only_working_directory(tmp_path: Path, real_data_dir: Path, mounts: list[Path]) -> None:
    folder = tmp_path / "readonly"
    mount_tmpfs(folder, "ro,size=64k")
    mounts.append(folder)
    env = research_env(tmp_path, real_data_dir, "sqlite:///mlflow.db")
    status, output = run_research(["run", "ae", *TINY], folder, env)
    assert status == 1, output
    assert f"cannot write to the working directory, where MLflow writes ./mlruns, in {folder}" in output
    assert "Read-only file system" in output
    assert "Traceback" not in output


def test_read_only_tracking_store(tmp_path: Path, real_data_dir: Path, mounts: list[Path]) -> None:
    folder = tmp_path / "readonly"
    mount_tmpfs(folder, "ro,size=64k")
    mounts.append(folder)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    status, output = run_research(["run", "ae", *TINY], tmp_path, research_env(tmp_path, real_data_dir, uri))
    assert status == 1, output
    assert f"the MLflow store {uri}" in output
    assert "Traceback" not in output


def test_full_disk_fails_run_and_keeps_checkpoint(tmp_path: Path, real_data_dir: Path,
                                                  mounts: list[Path]) -> None:
    # The store lives outside; ./mlruns, where the artifacts go, is on a 64 KiB filesystem
    # that config.yaml fits on and the first checkpoint does not.
    folder = tmp_path / "small"
    mount_tmpfs(folder, "size=64k")
    mounts.append(folder)
    env = research_env(tmp_path, real_data_dir)
    status, output = run_research(["run", "ae", *TINY], folder, env)
    assert status == 1, output
    assert "No space left on device" in output
    assert "Traceback" not in output
    run_id = run_id_in(output)
    checkpoint = tmp_path / "cache" / "runs" / run_id / "last.pt"
    assert f"its last checkpoint is kept at {checkpoint}" in output
    assert checkpoint.exists()
    run = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id)
    assert run.info.status == "FAILED"
    assert "No space left on device" in run.data.tags["research.end_reason"]


def test_odd_names_round_trip(workdir: Path, with_real_data: Path, tmp_path: Path) -> None:
    experiment, run_name = "tests: ä/b c", "run 1: é/ü ñ"
    result = CliRunner().invoke(main, ["run", "ae", *TINY, "--experiment", experiment, "--run-name", run_name])
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    (run,) = client.search_runs([found.experiment_id])
    assert run.info.run_name == run_name
    assert run.info.status == "FINISHED"
    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "download")))
    names = {path.relative_to(local).as_posix() for path in local.rglob("*") if path.is_file()}
    assert {"config.yaml", "checkpoints/last.pt", "checkpoints/best.pt", "figures/loss_curve.png"} <= names
