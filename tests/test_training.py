from __future__ import annotations

from pathlib import Path

import pytest
import torch

from research.data import load
from research.models.ae import AEConfig, Autoencoder
from research.spec import build_spec
from research.tracking import OfflineRun
from research.training import Trainer


@pytest.mark.parametrize("n_channels,latent_dim", [(1, 1), (4, 2), (11, 9), (16, 32)])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_ae_shapes_and_output_range(n_channels: int, latent_dim: int, batch_norm: bool) -> None:
    model = Autoencoder(AEConfig(n_channels=n_channels, latent_dim=latent_dim, batch_norm=batch_norm)).eval()
    images = torch.rand(5, 1, 28, 28)
    codes = model.encode(images)
    outputs = model.decode(codes)
    assert codes.shape == (5, latent_dim)
    assert outputs.shape == (5, 1, 28, 28)
    assert outputs.min() >= 0.0
    assert outputs.max() <= 1.0


def small_trainer(tmp_path: Path, data_dir: Path, seed: int = 0, **overrides: object) -> Trainer:
    spec = build_spec("ae", {"train_size": 512, "n_epochs": 1, "n_channels": 4, **overrides}, seed=seed)
    data = load(data_dir, train_size=512)
    return Trainer(spec, data, OfflineRun(), device=torch.device("cpu"), checkpoint_dir=tmp_path / "ckpt",
                   quiet=True, upload_checkpoints=False)


def test_training_step_changes_weights(tmp_path: Path, real_data_dir: Path) -> None:
    trainer = small_trainer(tmp_path, real_data_dir)
    before = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    batch = next(trainer.data.train.batches(64))
    trainer.model.train()
    trainer.model.training_step(batch, trainer.optimizers)
    after = trainer.model.state_dict()
    assert all(not torch.equal(before[key], after[key]) for key in before if key.endswith("weight"))


def test_validation_step_keeps_weights(tmp_path: Path, real_data_dir: Path) -> None:
    trainer = small_trainer(tmp_path, real_data_dir, batch_norm=True)
    before = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    trainer.evaluate(trainer.data.val)
    after = trainer.model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_same_seed_same_losses(tmp_path: Path, real_data_dir: Path) -> None:
    first = small_trainer(tmp_path / "a", real_data_dir, seed=7).fit().history
    second = small_trainer(tmp_path / "b", real_data_dir, seed=7).fit().history
    other = small_trainer(tmp_path / "c", real_data_dir, seed=8).fit().history
    assert first[0]["train/loss"] == second[0]["train/loss"]
    assert first[0]["val/loss"] == second[0]["val/loss"]
    assert first[0]["train/loss"] != other[0]["train/loss"]


@pytest.mark.parametrize("scheduler", ["cosine", "plateau", "onecycle"])
@pytest.mark.parametrize("optimizer", ["adamw", "rmsprop", "sgd"])
def test_optimizers_and_schedulers_train(tmp_path: Path, real_data_dir: Path, optimizer: str,
                                         scheduler: str) -> None:
    lr = 0.01 if optimizer == "sgd" else 0.002
    result = small_trainer(tmp_path, real_data_dir, optimizer=optimizer, scheduler=scheduler, lr=lr,
                           n_epochs=2).fit()
    assert len(result.history) == 2
    assert result.history[1]["train/loss"] < result.history[0]["train/loss"] * 1.05


def test_early_stopping_stops(tmp_path: Path, real_data_dir: Path) -> None:
    # A tiny learning rate barely moves the loss, and a huge one diverges, so a
    # patience of 1 must stop one of them before 6 epochs; lr 5 makes Adam blow
    # the weights up and the validation loss stops improving.
    result = small_trainer(tmp_path, real_data_dir, lr=5.0, patience=1, n_epochs=6).fit()
    assert result.state.stopped_early
    assert len(result.history) < 6
    assert result.state.best_epoch == min(range(1, len(result.history) + 1),
                                          key=lambda epoch: result.history[epoch - 1]["val/loss"])


def test_cnn_keeps_epoch_of_best_accuracy(tmp_path: Path, real_data_dir: Path) -> None:
    spec = build_spec("cnn", {"train_size": 512, "n_epochs": 4, "n_channels": 4, "lr": 0.003,
                              "val_fraction": 0.02}, seed=0)
    data = load(real_data_dir, train_size=512, val_fraction=0.02)
    result = Trainer(spec, data, OfflineRun(), device=torch.device("cpu"), checkpoint_dir=tmp_path / "ckpt",
                     quiet=True, upload_checkpoints=False).fit()
    accuracies = [record["val/acc"] for record in result.history]
    assert result.state.best_value == max(accuracies)
    assert result.state.best_epoch == accuracies.index(max(accuracies)) + 1
