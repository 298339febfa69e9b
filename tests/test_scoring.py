"""The Fréchet distance, the class entropy and the cached reference classifier."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from research.data import load
from research.scoring import (
    ReferenceConfig,
    class_entropy,
    classifier_outputs,
    frechet_distance,
    reference_classifier,
    reference_path,
)
from tests.conftest import SMALL_REFERENCE


def test_frechet_of_set_with_itself_is_zero() -> None:
    features = np.random.default_rng(0).normal(size=(500, 16))
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)


def test_frechet_of_shifted_gaussians() -> None:
    rng = np.random.default_rng(1)
    first = rng.normal(size=(20_000, 4))
    second = rng.normal(size=(20_000, 4)) + np.array([3.0, 0.0, 0.0, 0.0])
    # Equal covariances leave only the squared distance of the means, 9.
    assert frechet_distance(first, second) == pytest.approx(9.0, rel=0.05)


def test_frechet_of_scaled_gaussians() -> None:
    rng = np.random.default_rng(2)
    first = rng.normal(size=(20_000, 3))
    second = 2.0 * rng.normal(size=(20_000, 3))
    # tr(I) + tr(4I) - 2 tr(2I) = 3 + 12 - 12 = 3.
    assert frechet_distance(first, second) == pytest.approx(3.0, rel=0.05)


def test_class_entropy_bounds() -> None:
    assert class_entropy(np.arange(1000) % 10) == pytest.approx(math.log(10))
    assert class_entropy(np.full(1000, 3)) == 0.0
    assert class_entropy(np.arange(1000) % 2) == pytest.approx(math.log(2))


def test_reference_real_vs_noise(workdir: Path, real_data_dir: Path) -> None:
    config = ReferenceConfig.from_text(SMALL_REFERENCE)
    classifier = reference_classifier(config, real_data_dir)
    data = load(real_data_dir)
    test_features, test_predictions = classifier_outputs(classifier, data.test.float_images()[:2000])
    train_features, _ = classifier_outputs(classifier, data.train.float_images()[:2000])
    noise = torch.rand(2000, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    noise_features, _ = classifier_outputs(classifier, noise)

    real_vs_real = frechet_distance(train_features, test_features)
    real_vs_noise = frechet_distance(noise_features, test_features)
    assert real_vs_noise > 10 * real_vs_real
    accuracy = (test_predictions == data.test.labels[:2000].numpy()).mean()
    assert accuracy > 0.6


def test_reference_cached_by_config(workdir: Path, real_data_dir: Path) -> None:
    config = ReferenceConfig.from_text(SMALL_REFERENCE)
    first = reference_classifier(config, real_data_dir)
    path = reference_path(config)
    written = path.stat().st_mtime_ns
    second = reference_classifier(config, real_data_dir)
    assert path.stat().st_mtime_ns == written
    for key, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[key]), key
    other = config.replace(seed=1)
    assert reference_path(other) != path
    assert path.parent == workdir / "cache" / "reference-classifier"


def test_reference_training_is_deterministic(workdir: Path, real_data_dir: Path) -> None:
    config = ReferenceConfig.from_text(SMALL_REFERENCE).replace(n_epochs=1)
    first = reference_classifier(config, real_data_dir)
    reference_path(config).unlink()
    second = reference_classifier(config, real_data_dir)
    for key, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[key]), key


def test_reference_config_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="n_epoch"):
        ReferenceConfig.from_text("n_epoch=1")
