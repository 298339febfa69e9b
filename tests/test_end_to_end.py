"""A real `research run ae` on a real-data subset, checked through MlflowClient."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from research.checkpoints import load_checkpoint, load_model_checkpoint
from research.cli import main
from research.data import load
from tests.conftest import enter_store


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> dict:
    folder = tmp_path_factory.mktemp("e2e")
    patch, uri = enter_store(folder, real_data_dir)
    # The reference network: with 32 steps in all, batch-norm statistics are still
    # far from the data, so the test MSE would tell little about the logging checked here.
    result = CliRunner().invoke(main, ["run", "ae", "--epochs", "2", "--train-size", "2048", "--quiet",
                                       "--run-name", "e2e", "-p", "latent_dim=6", "--no-explore",
                                       "-p", "batch_norm=false", "-p", "scheduler=none"])
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ae").experiment_id])
    yield {"result": result, "client": client, "run": runs[0], "folder": folder}
    patch.undo()


def test_run_finishes_and_prints_id(finished_run: dict) -> None:
    result = finished_run["result"]
    run = finished_run["run"]
    assert result.exit_code == 0, result.output
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "e2e"
    assert run.info.run_id in result.output
    assert "mlflow ui" in result.output


def test_params_logged(finished_run: dict) -> None:
    params = finished_run["run"].data.params
    assert params["model.latent_dim"] == "6"
    assert params["model.n_channels"] == "24"
    assert params["train.lr"] == "0.0091"
    assert params["train.n_epochs"] == "2"
    assert params["data.train_size"] == "2048"
    assert params["split.train"] == "2048"
    assert params["split.val"] == "12000"
    assert params["split.test"] == "10000"
    assert params["seed"] == "0"
    assert params["device"] == "cpu"
    assert params["version.torch"] == torch.__version__


def test_per_epoch_metrics(finished_run: dict) -> None:
    client = finished_run["client"]
    run_id = finished_run["run"].info.run_id
    for key in ("train/loss", "val/loss", "lr", "epoch_time_s"):
        history = client.get_metric_history(run_id, key)
        assert sorted(metric.step for metric in history) == [1, 2], key
    val_loss = [metric.value for metric in sorted(client.get_metric_history(run_id, "val/loss"),
                                                   key=lambda metric: metric.step)]
    assert val_loss[1] < val_loss[0]


def test_test_metrics(finished_run: dict) -> None:
    metrics = finished_run["run"].data.metrics
    assert 0.0 < metrics["test/mse"] < 0.1
    assert metrics["test/psnr"] > 10.0


def test_artifacts_exist_and_open(finished_run: dict, tmp_path: Path) -> None:
    client = finished_run["client"]
    run_id = finished_run["run"].info.run_id
    local = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    for name in ("figures/loss_curve.png", "figures/reconstructions.png"):
        with Image.open(local / name) as image:
            image.verify()
    config = yaml.safe_load((local / "config.yaml").read_text())
    assert config["model"]["latent_dim"] == 6
    for name in ("best.pt", "last.pt"):
        checkpoint = torch.load(local / "checkpoints" / name, weights_only=True)
        assert checkpoint["model_name"] == "ae"
        assert checkpoint["config"]["latent_dim"] == 6
        assert checkpoint["epoch"] == 2
        assert set(checkpoint["optimizer_states"]) == {"main"}


def test_checkpoint_reproduces_reconstructions(finished_run: dict, tmp_path: Path,
                                                real_data_dir: Path) -> None:
    client = finished_run["client"]
    run_id = finished_run["run"].info.run_id
    path = Path(client.download_artifacts(run_id, "checkpoints/last.pt", str(tmp_path)))
    first = load_model_checkpoint(path)
    second = load_model_checkpoint(path)
    images = load(real_data_dir).test.float_images()[:16]
    with torch.no_grad():
        reconstructions = first(images)
    assert torch.equal(reconstructions, second(images))
    mse = torch.mean((reconstructions - images) ** 2).item()
    assert mse == pytest.approx(finished_run["run"].data.metrics["test/mse"], rel=0.5)
    assert load_checkpoint(path)["run_id"] == run_id


def test_local_checkpoints_removed_after_success(finished_run: dict) -> None:
    runs_dir = finished_run["folder"] / "cache" / "runs"
    assert not (runs_dir / finished_run["run"].info.run_id).exists()
