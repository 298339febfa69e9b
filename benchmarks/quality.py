"""Result quality of the default autoencoder and classifiers against PCA and the reference's figures.

Every model trains untracked in this process, at its default configuration
(the number of epochs aside, which the size sets), on the same data split.
The sample scores of the generative models are in `benchmarks/samples.py`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA

from benchmarks.common import SIZES, Result, Size
from research.checkpoints import save_checkpoint
from research.data import FashionMNIST, load
from research.latent.explore import ExploreOptions, explore
from research.latent.probes import probe_accuracies
from research.models.classifier import Classifier
from research.runner import RunOptions, RunOutcome, train
from research.spec import build_spec
from research.tracking import OfflineRun

REFERENCE_VAL_MSE = 0.0170
REFERENCE_FINETUNED_ACC = 0.863
REFERENCE_CNN_ACC = 0.883
CLASSIFIER_EPOCHS = {"full": 10, "quick": 2, "tiny": 1}  # per benchmark size
# The frozen-encoder probe trains only a small head, which learns faster at a higher
# lr and without the dropout and weight decay that the fine-tuning defaults add.
PROBE = {"mode": "freeze", "lr": 0.01, "dropout": 0.0, "weight_decay": 0.0}


def pca_mse(n_components: int, train_images: np.ndarray, *evaluated: np.ndarray) -> list[float]:
    """Fit PCA on the training images and return the reconstruction MSE of each evaluated set."""
    pca = PCA(n_components=n_components, random_state=0).fit(train_images)
    return [float(np.mean((pca.inverse_transform(pca.transform(images)) - images) ** 2)) for images in evaluated]


def flat(images: torch.Tensor) -> np.ndarray:
    return images.reshape(len(images), -1).float().div(255.0).numpy()


def fit(model_name: str, size: Size, data: FashionMNIST, **overrides: Any) -> RunOutcome:
    spec = build_spec(model_name, {"train_size": size.train_size, "val_fraction": size.val_fraction, **overrides})
    return train(spec, RunOptions(quiet=True, track=False), data=data)


def save_encoder(outcome: RunOutcome, model_name: str, folder: Path) -> str:
    """Write the trained model as a checkpoint a classifier can start from; return its path."""
    model = outcome.fit.model
    state = {key: tensor.detach().cpu() for key, tensor in model.state_dict().items()}
    path = folder / f"{model_name}.pt"
    save_checkpoint({"model_name": model_name, "config": model.config.to_dict(), "model_state": state,
                     "extra_state": model.extra_state()}, path)
    return str(path)


def epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def epochs_to(history: list[dict[str, float]], key: str, threshold: float) -> str:
    for record in history:
        if record.get(key, float("-inf")) >= threshold:
            return str(int(record["epoch"]))
    return f"not in {len(history)}"


def autoencoder_rows(size: Size, data: FashionMNIST, outcome: RunOutcome) -> list[list[str]]:
    best = outcome.fit.state
    val_mse = best.best_value if best.best_value is not None else float("nan")
    test_mse = outcome.test_metrics["test/mse"]
    latent_dim = outcome.fit.model.config.latent_dim
    pca_val, pca_test = pca_mse(latent_dim, flat(data.train.images), flat(data.val.images),
                                flat(data.test.images))
    probes = explore(OfflineRun(), outcome.fit.model, data, ExploreOptions(methods=()), seed=0)
    pca = PCA(n_components=latent_dim, random_state=0).fit(flat(data.train.images))
    pca_probes = probe_accuracies(pca.transform(flat(data.train.images)), data.train.labels.numpy(),
                                  pca.transform(flat(data.test.images)), data.test.labels.numpy(), 2)
    return [
        [f"`ae`, {epochs(size.n_epochs)}: validation MSE", f"{val_mse:.4f}",
         f"PCA ({latent_dim} components) {pca_val:.4f}; reference {REFERENCE_VAL_MSE:.4f}", "≤ 0.0125"],
        [f"`ae`, {epochs(size.n_epochs)}: test MSE", f"{test_mse:.4f}",
         f"PCA ({latent_dim} components) {pca_test:.4f}", ""],
        ["`ae` codes: logistic-regression probe, test accuracy", f"{probes['latent/logreg_acc']:.3f}",
         f"PCA ({latent_dim} components) {pca_probes['logreg_acc']:.3f}", "≥ 0.80"],
        ["`ae` codes: k-NN probe, test accuracy", f"{probes['latent/knn_acc']:.3f}",
         f"PCA ({latent_dim} components) {pca_probes['knn_acc']:.3f}", "≥ 0.84"],
    ]


def classifier_rows(size: Size, data: FashionMNIST, encoder: str) -> list[list[str]]:
    n_epochs = CLASSIFIER_EPOCHS[size.name]
    runs = {
        "finetune": fit("classifier", size, data, n_epochs=n_epochs, mode="finetune",
                        **Classifier.setup_from_source(encoder).overrides),
        "freeze": fit("classifier", size, data, n_epochs=n_epochs, **PROBE,
                      **Classifier.setup_from_source(encoder).overrides),
        "cnn": fit("cnn", size, data, n_epochs=n_epochs),
    }
    accuracy = {name: outcome.test_metrics["test/acc"] for name, outcome in runs.items()}
    to_85 = {name: epochs_to(outcome.fit.history, "val/acc", 0.85) for name, outcome in runs.items()}
    trained = epochs(n_epochs)
    return [
        [f"`classifier` fine-tuned from the `ae` above, {trained}: test accuracy", f"{accuracy['finetune']:.3f}",
         f"reference fine-tuned {REFERENCE_FINETUNED_ACC}", "≥ 0.915"],
        [f"`classifier` with the encoder frozen (a probe: lr 0.01, no dropout or weight decay), {trained}: "
         "test accuracy", f"{accuracy['freeze']:.3f}",
         "", "≥ 0.84"],
        [f"`cnn` from scratch, {trained}: test accuracy", f"{accuracy['cnn']:.3f}",
         f"reference from scratch {REFERENCE_CNN_ACC}", ""],
        ["epochs to 85 % validation accuracy: fine-tuned / `cnn`", f"{to_85['finetune']} / {to_85['cnn']}",
         "", "fine-tuned fewer"],
    ]


def run(size_name: str = "full") -> Result:
    size = SIZES[size_name]
    data = load(train_size=size.train_size, val_fraction=size.val_fraction)
    autoencoder = fit("ae", size, data, n_epochs=size.n_epochs)
    rows = autoencoder_rows(size, data, autoencoder)
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as folder:
        rows += classifier_rows(size, data, save_encoder(autoencoder, "ae", Path(folder)))
    training = "all 48,000" if size.train_size is None else f"the first {size.train_size:,}"
    n_val = round(60_000 * size.val_fraction)
    return Result(name="quality", title="Result quality of the default autoencoder and classifiers",
                  columns=["what", "research", "baseline", "target"], rows=rows, size=size_name,
                  notes=[f"Each model trains at its defaults on {training} training images. Validation MSE is "
                         f"the best epoch's mean squared error per pixel on the {n_val:,} held-out training "
                         "images; test MSE and every accuracy are on the 10,000 test images."])
