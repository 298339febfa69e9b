"""`research run` with the latent exploration and `research explore`, on real data and a temp MLflow store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from research.cli import main
from research.config import Config, param
from research.models import MODELS, Model, TrainConfig, register_model
from research.models.base import Batch, Metrics
from tests.conftest import enter_store

FIGURES = ("pca_variance", "pca", "tsne", "umap", "generation", "interpolations", "model_samples")


@pytest.fixture(scope="module")
def explored_run(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> dict:
    folder = tmp_path_factory.mktemp("latent-e2e")
    patch, uri = enter_store(folder, real_data_dir)
    result = CliRunner().invoke(main, ["run", "ae", "--epochs", "1", "--train-size", "1024", "--quiet",
                                       "--n-samples", "500", "-p", "n_channels=4", "-p", "latent_dim=6"])
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("ae").experiment_id])
    yield {"result": result, "client": client, "run": runs[0], "folder": folder}
    patch.undo()


def test_run_logs_latent_figures(explored_run: dict, tmp_path: Path) -> None:
    assert explored_run["result"].exit_code == 0, explored_run["result"].output
    client = explored_run["client"]
    local = Path(client.download_artifacts(explored_run["run"].info.run_id, "latent", str(tmp_path)))
    for name in FIGURES:
        with Image.open(local / f"{name}.png") as image:
            image.verify()
    saved = np.load(local / "codes.npz")
    assert saved["codes"].shape == (500, 6)
    assert saved["labels"].shape == (500,)
    for method in ("pca", "tsne", "umap"):
        assert saved[method].shape == (500, 2)


def test_run_logs_latent_metrics(explored_run: dict) -> None:
    metrics = explored_run["run"].data.metrics
    assert metrics["latent/n_samples"] == 500
    assert 1 <= metrics["latent/pca_components_90"] <= 6
    assert 0.7 < metrics["latent/tsne_trustworthiness"] <= 1.0
    assert 0.7 < metrics["latent/umap_trustworthiness"] <= 1.0
    assert metrics["latent/tsne_perplexity"] == 30
    assert metrics["latent/umap_n_neighbors"] == 15
    # Ten classes give 10 % by chance; even one short epoch gives codes well above that.
    assert 0.3 < metrics["latent/logreg_acc"] <= 1.0
    assert 0.3 < metrics["latent/knn_acc"] <= 1.0
    for method in ("encode", "pca", "tsne", "umap", "probes", "total"):
        assert metrics[f"latent/time_{method}_s"] > 0, method


def test_explore_adds_to_finished_run(explored_run: dict) -> None:
    client = explored_run["client"]
    run_id = explored_run["run"].info.run_id
    result = CliRunner().invoke(main, ["explore", run_id, "--n-samples", "50", "--methods", "pca"])
    assert result.exit_code == 0, result.output
    assert run_id in result.output
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["latent/n_samples"] == 50
    history = client.get_metric_history(run_id, "latent/n_samples")
    assert sorted(metric.value for metric in history) == [50, 500]


def test_explore_unknown_run_is_usage_error(explored_run: dict) -> None:
    result = CliRunner().invoke(main, ["explore", "0123456789abcdef0123456789abcdef"])
    assert result.exit_code == 2
    assert "not found" in result.output
    assert "Traceback" not in result.output


def test_explore_rejects_unknown_method(explored_run: dict) -> None:
    result = CliRunner().invoke(main, ["explore", explored_run["run"].info.run_id, "--methods", "pca,lda"])
    assert result.exit_code == 2
    assert "pca, tsne, umap" in result.output


def test_no_explore_skips_latent(workdir: Path, with_real_data: Path) -> None:
    result = CliRunner().invoke(main, ["run", "ae", "--epochs", "1", "--train-size", "512", "--quiet",
                                       "--no-explore", "-p", "n_channels=4"])
    assert result.exit_code == 0, result.output
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("ae").experiment_id])[0]
    assert not [key for key in run.data.metrics if key.startswith("latent/")]
    assert client.list_artifacts(run.info.run_id, "latent") == []


@dataclass(frozen=True)
class MeanImageConfig(Config):
    """Hyperparameters of the test-only mean-image model."""

    initial_value: float = param(0.5, "initial value of every pixel", min=0.0, max=1.0)


class MeanImage(Model):
    """Learns the mean training image; it has no encoder."""

    Config = MeanImageConfig
    default_training = TrainConfig(n_epochs=1, batch_size=256)

    def __init__(self, config: MeanImageConfig) -> None:
        super().__init__(config)
        self.image = torch.nn.Parameter(torch.full((1, 1, 28, 28), config.initial_value))

    def loss_terms(self, batch: Batch) -> Metrics:
        images, _ = batch
        return {"loss": F.mse_loss(self.image.expand_as(images), images)}


@pytest.fixture
def mean_image_model() -> str:
    register_model("test-mean-image")(MeanImage)
    yield "test-mean-image"
    MODELS.remove("test-mean-image")


def test_explore_model_without_encoder(workdir: Path, with_real_data: Path, mean_image_model: str) -> None:
    trained = CliRunner().invoke(main, ["run", mean_image_model, "--train-size", "512", "--quiet"])
    assert trained.exit_code == 0, trained.output
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name(mean_image_model).experiment_id])[0]
    assert client.list_artifacts(run.info.run_id, "latent") == []
    result = CliRunner().invoke(main, ["explore", run.info.run_id])
    assert result.exit_code == 2
    assert "has no encoder" in result.output
    assert mean_image_model in result.output
