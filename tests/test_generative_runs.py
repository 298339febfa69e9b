"""Real `research run vae|gan|dcgan` runs on a real-data subset, checked through MlflowClient."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from research.checkpoints import load_checkpoint, load_model_checkpoint
from research.cli import main
from research.figures import image_grid
from tests.conftest import enter_store

# A small validation split keeps the per-epoch evaluation short.
COMMON_ARGS = ["--epochs", "2", "--train-size", "1000", "--quiet", "--seed", "3", "-p", "val_fraction=0.05",
               "--no-explore"]
EXTRA_ARGS = {
    "vae": ["--batch-size", "100"],
    "gan": [],
    "dcgan": ["-p", "n_channels=8"],
}
EPOCH_METRICS = {
    "vae": ("loss", "recon_loss", "kl"),
    "gan": ("d_loss", "g_loss", "d_real", "d_fake"),
    "dcgan": ("d_loss", "g_loss", "d_real", "d_fake"),
}
TEST_METRICS = {
    "vae": ("test/loss", "test/recon_loss", "test/kl", "test/elbo"),
    "gan": ("test/d_loss", "test/g_loss", "test/d_real", "test/d_fake"),
    "dcgan": ("test/d_loss", "test/g_loss", "test/d_real", "test/d_fake"),
}
GAN_IMAGES = ("figures/loss_curve.png", "figures/scores.png", "samples/epoch_0001.png", "samples/epoch_0002.png",
              "samples/progress.gif")
IMAGES = {
    "vae": ("figures/loss_curve.png", "figures/reconstructions.png", "figures/samples.png", "figures/manifold.png"),
    "gan": GAN_IMAGES,
    "dcgan": GAN_IMAGES,
}


def run_cli(folder: Path, real_data_dir: Path, args: list[str]) -> tuple[object, MlflowClient]:
    """Run `research` in `folder` with its own MLflow store; return the click result and a client."""
    patch, uri = enter_store(folder, real_data_dir)
    try:
        result = CliRunner().invoke(main, args)
    finally:
        patch.undo()
    return result, MlflowClient(tracking_uri=uri)


def only_run(client: MlflowClient, experiment: str) -> object:
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope="module", params=sorted(EXTRA_ARGS))
def finished(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             real_data_dir: Path) -> dict:
    name = request.param
    folder = tmp_path_factory.mktemp(name)
    result, client = run_cli(folder, real_data_dir, ["run", name, *COMMON_ARGS, *EXTRA_ARGS[name]])
    assert result.exit_code == 0, result.output
    run = only_run(client, name)
    artifacts = Path(client.download_artifacts(run.info.run_id, "", str(folder / "artifacts")))
    return {"name": name, "client": client, "run": run, "artifacts": artifacts}


def test_run_finishes(finished: dict) -> None:
    run = finished["run"]
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == "3"
    assert run.data.params["train.n_epochs"] == "2"
    assert run.data.params["split.train"] == "1000"
    assert run.data.params["data.val_fraction"] == "0.05"


def test_per_epoch_metrics(finished: dict) -> None:
    client, run_id = finished["client"], finished["run"].info.run_id
    for quantity in EPOCH_METRICS[finished["name"]]:
        for split in ("train", "val"):
            history = client.get_metric_history(run_id, f"{split}/{quantity}")
            assert sorted(metric.step for metric in history) == [1, 2], f"{split}/{quantity}"
            assert all(math.isfinite(metric.value) for metric in history), f"{split}/{quantity}"
    assert len(client.get_metric_history(run_id, "epoch_time_s")) == 2


def test_test_metrics(finished: dict) -> None:
    metrics = finished["run"].data.metrics
    for key in TEST_METRICS[finished["name"]]:
        assert key in metrics, key
        assert math.isfinite(metrics[key]), key


def test_images_open(finished: dict) -> None:
    artifacts = finished["artifacts"]
    for name in IMAGES[finished["name"]]:
        assert (artifacts / name).is_file(), name
    images = sorted(artifacts.rglob("*.png")) + sorted(artifacts.rglob("*.gif"))
    assert len(images) == len(IMAGES[finished["name"]])
    for path in images:
        with Image.open(path) as image:
            image.load()
            assert image.width > 50, path
            assert image.height > 50, path


def test_vae_terms_add_up(finished: dict) -> None:
    if finished["name"] != "vae":
        pytest.skip("VAE only")
    metrics = finished["run"].data.metrics
    beta = float(finished["run"].data.params["model.beta"])
    assert metrics["test/elbo"] == pytest.approx(-(metrics["test/recon_loss"] + metrics["test/kl"]))
    assert metrics["test/loss"] == pytest.approx(metrics["test/recon_loss"] + beta * metrics["test/kl"])
    assert metrics["test/kl"] > 0.0
    history = finished["client"].get_metric_history(finished["run"].info.run_id, "val/loss")
    val_loss = [metric.value for metric in sorted(history, key=lambda metric: metric.step)]
    assert val_loss[1] < val_loss[0]


def test_gan_scores_are_probabilities(finished: dict) -> None:
    if finished["name"] == "vae":
        pytest.skip("GANs only")
    metrics = finished["run"].data.metrics
    for key in ("train/d_real", "train/d_fake", "val/d_real", "val/d_fake"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert finished["run"].data.params["train.batch_size"] == "100"
    assert finished["run"].data.params["train.lr"] == "0.0002"


def test_progress_gif_has_every_epoch(finished: dict) -> None:
    if finished["name"] == "vae":
        pytest.skip("GANs only")
    artifacts = finished["artifacts"]
    with Image.open(artifacts / "samples/progress.gif") as gif:
        assert gif.n_frames == 2
        assert gif.is_animated
        with Image.open(artifacts / "samples/epoch_0002.png") as last_grid:
            assert gif.size == last_grid.size


def test_checkpoint_redraws_last_grid(finished: dict) -> None:
    if finished["name"] == "vae":
        pytest.skip("GANs only")
    path = finished["artifacts"] / "checkpoints" / "last.pt"
    assert load_checkpoint(path)["extra_state"]["progress_grids"].shape == (2, 64, 28, 28)
    model = load_model_checkpoint(path)
    with torch.no_grad():
        grid = image_grid(model(model.fixed_noise), 8)
    with Image.open(finished["artifacts"] / "samples/epoch_0002.png") as logged:
        assert np.array_equal(np.asarray(grid), np.asarray(logged.convert("L")))


def test_vae_traversal_for_larger_latent(tmp_path: Path, real_data_dir: Path) -> None:
    result, client = run_cli(tmp_path, real_data_dir, ["run", "vae", "--epochs", "1", "--train-size", "512",
                                                       "--quiet", "-p", "val_fraction=0.05", "-p", "latent_dim=3",
                                                       "-p", "n_channels=4", "--no-explore"])
    assert result.exit_code == 0, result.output
    run = only_run(client, "vae")
    artifacts = Path(client.download_artifacts(run.info.run_id, "figures", str(tmp_path / "artifacts")))
    assert not (artifacts / "manifold.png").exists()
    with Image.open(artifacts / "traversal.png") as image:
        image.load()
        assert image.height > 100


def test_non_finite_loss_fails_run(tmp_path: Path, real_data_dir: Path) -> None:
    # One batch per epoch: Adam's first step with lr 1e30 moves every weight by
    # about 1e30, so epoch 1 ends with finite training metrics and a checkpoint,
    # and the first forward pass of epoch 2 overflows to NaN.
    args = ["run", "vae", "--epochs", "3", "--train-size", "200", "--batch-size", "200", "--quiet",
            "-p", "val_fraction=0.05", "-p", "lr=1e30", "-p", "n_channels=4", "--no-explore"]
    result, client = run_cli(tmp_path, real_data_dir, args)

    assert result.exit_code == 1
    assert "non-finite train/loss" in result.output
    run = only_run(client, "vae")
    assert run.info.status == "FAILED"
    reason = run.data.tags["research.end_reason"]
    assert reason.startswith("NonFiniteLossError")
    assert "epoch 2, step 1" in reason
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "train/loss")] == [1]
    kept = Path(client.download_artifacts(run.info.run_id, "checkpoints/last.pt", str(tmp_path / "artifacts")))
    assert load_checkpoint(kept)["epoch"] == 1
    local = tmp_path / "cache" / "runs" / run.info.run_id / "last.pt"
    assert load_checkpoint(local)["epoch"] == 1
    assert "figures/loss_curve.png" in [item.path for item in client.list_artifacts(run.info.run_id, "figures")]
