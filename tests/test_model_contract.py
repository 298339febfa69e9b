"""The contract every registered model keeps with the training loop, checked on real images.

Each test runs once per name in `MODELS`, so a new model, built-in or from a
plugin, is covered without a test file of its own. Models are built from
`Model.example_config()`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from research.checkpoints import load_model_checkpoint, save_checkpoint
from research.data import FashionMNIST, load
from research.models import MODELS, DataConfig, Model
from research.spec import RunSpec
from research.tracking import OfflineRun
from research.training import Trainer

BATCH_SIZE = 32
TRAIN_SIZE = 256
MODEL_NAMES = MODELS.names()


@pytest.fixture(scope="module")
def data(real_data_dir: Path) -> FashionMNIST:
    return load(real_data_dir, train_size=TRAIN_SIZE)


@pytest.fixture
def batch(data: FashionMNIST) -> tuple[torch.Tensor, torch.Tensor]:
    return next(data.train.batches(BATCH_SIZE))


def build(name: str) -> Model:
    torch.manual_seed(0)
    model_class = MODELS.get(name)
    return model_class(model_class.example_config())


def state_copy(model: Model) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def assert_finite_scalars(metrics: dict[str, torch.Tensor]) -> None:
    assert metrics, "a step returned no metrics"
    for key, value in metrics.items():
        assert value.dim() == 0, f"{key} has shape {tuple(value.shape)}, expected a scalar"
        assert torch.isfinite(value), f"{key} is {value.item()}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_registered_model_matches_name(name: str) -> None:
    model = build(name)
    assert model.name == name
    assert model.monitor is None or isinstance(model.monitor, str)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_encode_shape(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = build(name).eval()
    if not model.has_encoder:
        pytest.skip(f"{name} has no encoder")
    images = batch[0]
    with torch.no_grad():
        codes = model.encode(images)
        again = model.encode(images)
    assert codes.dim() == 2
    assert codes.shape[0] == len(images)
    assert torch.isfinite(codes).all()
    assert torch.equal(codes, again), "encode in eval mode must be deterministic"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_sample_shape_and_range(name: str) -> None:
    model = build(name).eval()
    if not model.can_generate:
        pytest.skip(f"{name} cannot generate")
    images = model.sample(5, torch.Generator().manual_seed(1))
    again = model.sample(5, torch.Generator().manual_seed(1))
    assert images.shape == (5, 1, 28, 28)
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert torch.equal(images, again), "the same noise generator must give the same samples"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_validation_step_returns_scalars(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = build(name).eval()
    assert_finite_scalars(model.validation_step(batch))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_step_changes_weights(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = build(name).train()
    optimizers = model.configure_optimizers(model.default_training)
    before = state_copy(model)

    metrics = model.training_step(batch, optimizers)

    assert_finite_scalars(metrics)
    trained = [key for key, parameter in model.named_parameters() if parameter.requires_grad]
    assert trained, f"{name} has no trainable parameters"
    unchanged = [key for key in trained if torch.equal(before[key], model.state_dict()[key])]
    assert not unchanged, f"parameters not updated by a training step: {unchanged}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_validation_step_keeps_state(name: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    model = build(name).eval()
    before = state_copy(model)

    model.validation_step(batch)

    after = model.state_dict()
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert not changed, f"a validation step changed {changed}"


def trained_trainer(name: str, data: FashionMNIST, checkpoint_dir: Path,
                    batch: tuple[torch.Tensor, torch.Tensor]) -> Trainer:
    """Return a Trainer whose model took one training step, so its weights differ from initialisation."""
    model_class = MODELS.get(name)
    spec = RunSpec(model_name=name, model=model_class.example_config(),
                   train=model_class.default_training.replace(batch_size=BATCH_SIZE, n_epochs=1),
                   data=DataConfig(train_size=TRAIN_SIZE))
    trainer = Trainer(spec, data, OfflineRun(), device=torch.device("cpu"), checkpoint_dir=checkpoint_dir,
                      quiet=True, upload_checkpoints=False)
    trainer.model.train()
    trainer.model.training_step(batch, trainer.optimizers)
    trainer.model.eval()
    return trainer


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_checkpoint_round_trip(name: str, data: FashionMNIST, batch: tuple[torch.Tensor, torch.Tensor],
                               tmp_path: Path) -> None:
    trainer = trained_trainer(name, data, tmp_path, batch)
    original = trainer.model
    path = save_checkpoint(trainer.checkpoint_payload(), tmp_path / "model.pt")

    loaded = load_model_checkpoint(path)

    assert type(loaded) is type(original)
    assert not loaded.training
    saved_state = original.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved_state[key]), key
    torch.manual_seed(5)  # validation steps may draw noise (a VAE's posterior sample, a GAN's z)
    expected = original.validation_step(batch)
    torch.manual_seed(5)
    actual = loaded.validation_step(batch)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key
    if original.has_encoder:
        with torch.no_grad():
            assert torch.equal(loaded.encode(batch[0]), original.encode(batch[0]))
    if original.can_generate:
        assert torch.equal(loaded.sample(4, torch.Generator().manual_seed(2)),
                           original.sample(4, torch.Generator().manual_seed(2)))
