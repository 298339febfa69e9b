"""Result quality of the default configurations against PCA and the reference's figures."""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from sklearn.decomposition import PCA

from benchmarks.common import SIZES, Result
from research.data import load
from research.latent.explore import ExploreOptions, explore
from research.latent.probes import probe_accuracies
from research.runner import RunOptions, train
from research.spec import build_spec
from research.tracking import OfflineRun

REFERENCE_VAL_MSE = 0.0170


def pca_mse(n_components: int, train_images: np.ndarray, *evaluated: np.ndarray) -> list[float]:
    """Fit PCA on the training images and return the reconstruction MSE of each evaluated set."""
    pca = PCA(n_components=n_components, random_state=0).fit(train_images)
    return [float(np.mean((pca.inverse_transform(pca.transform(images)) - images) ** 2)) for images in evaluated]


def flat(images: torch.Tensor) -> np.ndarray:
    return images.reshape(len(images), -1).float().div(255.0).numpy()


def autoencoder_rows(size_name: str) -> list[list[str]]:
    size = SIZES[size_name]
    spec = build_spec("ae", {"n_epochs": size.n_epochs, "train_size": size.train_size})
    data = load(train_size=size.train_size)
    with tempfile.TemporaryDirectory(prefix="bench-quality-"):
        outcome = train(spec, RunOptions(quiet=True, track=False), data=data)
    best = outcome.fit.state
    val_mse = best.best_value if best.best_value is not None else float("nan")
    test_mse = outcome.test_metrics["test/mse"]
    latent_dim = spec.model.latent_dim
    pca_val, pca_test = pca_mse(latent_dim, flat(data.train.images), flat(data.val.images),
                                flat(data.test.images))
    probes = explore(OfflineRun(), outcome.fit.model, data, ExploreOptions(methods=()), seed=0)
    pca = PCA(n_components=latent_dim, random_state=0).fit(flat(data.train.images))
    pca_probes = probe_accuracies(pca.transform(flat(data.train.images)), data.train.labels.numpy(),
                                  pca.transform(flat(data.test.images)), data.test.labels.numpy(), 2)
    return [
        [f"`ae` defaults, {size.n_epochs} epochs: validation MSE", f"{val_mse:.4f}",
         f"PCA ({latent_dim} components) {pca_val:.4f}; reference {REFERENCE_VAL_MSE}", "≤ 0.0125"],
        [f"`ae` defaults, {size.n_epochs} epochs: test MSE", f"{test_mse:.4f}",
         f"PCA ({latent_dim} components) {pca_test:.4f}", ""],
        ["`ae` codes: logistic-regression probe, test accuracy", f"{probes['latent/logreg_acc']:.3f}",
         f"PCA ({latent_dim} components) {pca_probes['logreg_acc']:.3f}", "≥ 0.80"],
        ["`ae` codes: k-NN probe, test accuracy", f"{probes['latent/knn_acc']:.3f}",
         f"PCA ({latent_dim} components) {pca_probes['knn_acc']:.3f}", "≥ 0.84"],
    ]


def run(size_name: str = "full") -> Result:
    rows = autoencoder_rows(size_name)
    return Result(name="quality", title="Result quality of the default configurations",
                  columns=["what", "research", "baseline", "target"], rows=rows, size=size_name,
                  notes=["Validation MSE is the best epoch's mean squared error per pixel on the 12,000 "
                         "held-out training images; test MSE is on the 10,000 test images."])
