"""Latent exploration functions on real codes, down to a handful of points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from research.data import load
from research.latent import ExploreOptions, embed, explore
from research.latent.embedding import clamp_n_neighbors, clamp_perplexity, components_for_variance
from research.latent.explore import encode_split
from research.latent.generation import draw_per_class, interpolate, pick_pairs
from research.spec import build_spec
from research.tracking import OfflineRun
from research.training import Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, real_data_dir: Path) -> tuple:
    """An autoencoder trained for one epoch on 512 real images, and the real data."""
    spec = build_spec("ae", {"train_size": 512, "n_epochs": 1, "n_channels": 4, "latent_dim": 6})
    data = load(real_data_dir, train_size=512)
    trainer = Trainer(spec, data, OfflineRun(), device=torch.device("cpu"),
                      checkpoint_dir=tmp_path_factory.mktemp("ckpt"), quiet=True, upload_checkpoints=False)
    model = trainer.fit().model.eval()
    return model, data


@pytest.fixture(scope="module")
def codes(trained: tuple) -> tuple[np.ndarray, np.ndarray]:
    model, data = trained
    test = encode_split(model, data.test, np.arange(40))
    return test.codes, test.labels


@pytest.mark.parametrize("n", [2, 5, 20])
@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_view_runs_on_few_points(codes: tuple, method: str, n: int) -> None:
    view = embed(codes[0][:n], method, seed=0)
    assert view is not None
    assert view.points.shape == (n, 2)
    assert np.isfinite(view.points).all()


@pytest.mark.parametrize("n", [5, 20])
def test_umap_runs_on_few_points(codes: tuple, n: int) -> None:
    view = embed(codes[0][:n], "umap", seed=0)
    assert view is not None
    assert view.points.shape == (n, 2)
    assert np.isfinite(view.points).all()
    assert view.settings["umap_n_neighbors"] == min(15, n - 1)


def test_umap_skipped_on_two_points(codes: tuple, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="research.latent"):
        assert embed(codes[0][:2], "umap") is None
    assert "Skipping UMAP" in caplog.text


@pytest.mark.parametrize("n,expected", [(2, 1.0), (5, 4 / 3), (20, 19 / 3), (40, 13.0), (10_000, 30.0)])
def test_perplexity_clamped(codes: tuple, n: int, expected: float) -> None:
    assert clamp_perplexity(30.0, n) == pytest.approx(expected)
    if n <= len(codes[0]):
        view = embed(codes[0][:n], "tsne")
        assert view.settings["tsne_perplexity"] == pytest.approx(expected)


def test_neighbors_clamped() -> None:
    assert clamp_n_neighbors(15, 4) == 3
    assert clamp_n_neighbors(15, 3) == 2
    assert clamp_n_neighbors(15, 1000) == 15


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_view_deterministic_per_seed(codes: tuple, method: str) -> None:
    first = embed(codes[0], method, seed=3)
    second = embed(codes[0], method, seed=3)
    other = embed(codes[0], method, seed=4)
    np.testing.assert_array_equal(first.points, second.points)
    assert not np.array_equal(first.points, other.points)


def test_trustworthiness_in_range(codes: tuple) -> None:
    view = embed(codes[0], "tsne")
    assert 0.5 < view.trustworthiness <= 1.0


def test_components_for_variance() -> None:
    assert components_for_variance(np.array([0.5, 0.3, 0.15, 0.05])) == 3
    assert components_for_variance(np.array([0.95, 0.05])) == 1
    assert components_for_variance(np.array([0.9, 0.1])) == 1


def test_pairs_cross_classes() -> None:
    labels = np.array([0, 0, 1, 2, 2, 1])
    pairs = pick_pairs(labels, 4, np.random.default_rng(0))
    assert len(pairs) == 4
    for start, end in pairs:
        assert labels[start] != labels[end]


def test_pairs_of_one_class_and_one_point() -> None:
    pairs = pick_pairs(np.array([3, 3, 3]), 2, np.random.default_rng(0))
    assert all(start != end for start, end in pairs)
    assert pick_pairs(np.array([3]), 2, np.random.default_rng(0)) == []


def test_interpolation_ends_at_codes() -> None:
    start, end = np.zeros(3), np.ones(3)
    path = interpolate(start, end, 5)
    np.testing.assert_array_equal(path[0], start)
    np.testing.assert_array_equal(path[-1], end)
    assert path.shape == (5, 3)


def test_per_class_draws_skip_lone_class(codes: tuple) -> None:
    values, labels = codes
    labels = labels.copy()
    labels[0] = 9 if (labels[1:] != 9).all() else labels[0]
    drawn = draw_per_class(values, labels, 4, np.random.default_rng(0))
    for label, draws in drawn.items():
        assert (labels == label).sum() >= 2
        assert draws.shape == (4, values.shape[1])


@pytest.mark.parametrize("n_samples", [1, 2, 5, 20])
def test_explore_on_few_test_codes(trained: tuple, n_samples: int) -> None:
    model, data = trained
    metrics = explore(OfflineRun(), model, data, ExploreOptions(n_samples=n_samples), seed=0)
    assert metrics["latent/n_samples"] == n_samples
    assert 0.0 <= metrics["latent/logreg_acc"] <= 1.0
    assert ("latent/time_umap_s" in metrics) == (n_samples >= 4)
    assert ("latent/time_tsne_s" in metrics) == (n_samples >= 2)
    assert ("latent/pca_components_90" in metrics) == (n_samples >= 2)


def test_explore_deterministic(trained: tuple) -> None:
    model, data = trained
    options = ExploreOptions(n_samples=60, methods=("tsne",))
    first = explore(OfflineRun(), model, data, options, seed=1)
    second = explore(OfflineRun(), model, data, options, seed=1)
    for key in first:
        if not key.startswith("latent/time_"):
            assert first[key] == second[key], key
