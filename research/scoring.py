"""Sample quality of generative models: a Fréchet distance and a class entropy.

Both use a reference classifier of the `cnn` architecture trained on the
FashionMNIST training set, because Inception weights cannot be downloaded here
and a classifier of the data's own domain is the usual replacement. The
Fréchet distance is computed on its penultimate-layer features (128 units), so
`sample/fid` compares only with other scores from the same reference
classifier, never with published Inception-based FID values. Each score is
logged with its floor, the distance between real training and real test
images, which is the best a generator can expect.

The reference classifier is trained deterministically once per config and
cached under `cache_dir()/reference-classifier/<config hash>.pt`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from research.checkpoints import load_checkpoint, save_checkpoint
from research.config import Config, param
from research.data import N_CLASSES, FashionMNIST, cache_dir, load

if TYPE_CHECKING:
    from research.models.cnn import CNN
    from research.runner import FinishedTraining, Finisher

logger = logging.getLogger(__name__)

REFERENCE_ENV = "RESEARCH_REFERENCE_CLASSIFIER"
REFERENCE_FORMAT = 1  # bump when the training recipe changes, so old cache files are not reused
N_SAMPLES = 10_000
SAMPLE_SEED = 0


@dataclass(frozen=True)
class ReferenceConfig(Config):
    """Training settings of the reference classifier; their hash names the cache file."""

    n_epochs: int = param(1, "training epochs", min=1)
    train_size: int | None = param(None, "first N training images only; None uses all", min=1)
    val_fraction: float = param(0.1, "share of the 60,000 training images held out", min=0.0, max=0.9,
                                min_exclusive=True)
    n_channels: int = param(8, "channels of the first convolution of the cnn", min=1)
    batch_size: int = param(128, "images per batch", min=1)
    lr: float = param(1e-3, "Adam learning rate", min=0.0, min_exclusive=True)
    seed: int = param(0, "seed of weights and shuffling", min=0)

    def key(self) -> str:
        text = json.dumps({"format": REFERENCE_FORMAT, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_text(cls, text: str) -> ReferenceConfig:
        """Build a config from overrides such as `n_epochs=1,train_size=1024`; empty text gives the defaults."""
        pairs = [item.partition("=") for item in text.split(",") if item.strip()]
        return cls.from_dict({name.strip(): value.strip() for name, _, value in pairs})

    @classmethod
    def from_environment(cls) -> ReferenceConfig:
        """Read overrides from RESEARCH_REFERENCE_CLASSIFIER (tests set it to train a small one)."""
        return cls.from_text(os.environ.get(REFERENCE_ENV, ""))


def reference_path(config: ReferenceConfig) -> Path:
    return cache_dir() / "reference-classifier" / f"{config.key()}.pt"


def reference_classifier(config: ReferenceConfig, data_dir: str | Path | None = None,
                         device: torch.device | str = "cpu") -> CNN:
    """Return the cached reference classifier for `config`, training and caching it first if needed."""
    from research.checkpoints import build_model_from_checkpoint

    path = reference_path(config)
    if not path.is_file():
        train_reference(config, data_dir, path)
    return build_model_from_checkpoint(load_checkpoint(path), str(path)).to(device)


def train_reference(config: ReferenceConfig, data_dir: str | Path | None, path: Path) -> None:
    from research.spec import build_spec
    from research.tracking import OfflineRun
    from research.training import Trainer

    logger.info("Training the reference classifier for sample scores (%s); it is cached at %s",
                ", ".join(f"{key}={value}" for key, value in config.to_dict().items()), path)
    spec = build_spec("cnn", {"n_epochs": config.n_epochs, "train_size": config.train_size,
                              "val_fraction": config.val_fraction, "n_channels": config.n_channels,
                              "batch_size": config.batch_size, "lr": config.lr, "patience": 0},
                      seed=config.seed)
    data = load(data_dir, val_fraction=config.val_fraction, train_size=config.train_size)
    with tempfile.TemporaryDirectory(prefix="research-reference-") as folder:
        # The reference must not depend on the device, so it always trains on the CPU.
        trainer = Trainer(spec, data, OfflineRun(), device=torch.device("cpu"), checkpoint_dir=Path(folder),
                          quiet=True, upload_checkpoints=False)
        result = trainer.fit()
    val_acc = result.history[-1].get("val/acc", float("nan"))
    logger.info("Reference classifier validation accuracy %.4f", val_acc)
    state = {key: tensor.detach().cpu() for key, tensor in result.model.state_dict().items()}
    save_checkpoint({"model_name": "cnn", "config": spec.model.to_dict(), "model_state": state,
                     "reference_config": config.to_dict(), "val_acc": val_acc}, path)


@torch.no_grad()
def classifier_outputs(classifier: CNN, images: torch.Tensor, batch_size: int = 1000
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Return penultimate features (N, F) as float64 and predicted classes (N,) of images in [0, 1]."""
    classifier.eval()
    features, predictions = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(classifier.device).float()
        hidden = classifier.features(batch)
        features.append(hidden.double().cpu())
        predictions.append(classifier.output(hidden).argmax(1).cpu())
    return torch.cat(features).numpy(), torch.cat(predictions).numpy()


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Return the Fréchet distance between Gaussians fitted to two feature sets (N, F).

    d² = |μa − μb|² + tr(Σa) + tr(Σb) − 2 tr((Σa Σb)^½), with the last trace
    taken as the sum of square roots of the eigenvalues of Σa^½ Σb Σa^½, which
    is symmetric, so no complex square root appears.
    """
    mean_a, mean_b = features_a.mean(0), features_b.mean(0)
    cov_a = np.atleast_2d(np.cov(features_a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(features_b, rowvar=False))
    eigenvalues, eigenvectors = np.linalg.eigh(cov_a)
    sqrt_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
    product = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_sqrt = np.sqrt(np.clip(product, 0.0, None)).sum()
    distance = float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    return max(distance, 0.0)  # rounding can leave a tiny negative value for identical sets


def class_entropy(predictions: np.ndarray) -> float:
    """Return the entropy (nats) of the predicted-class histogram; ln 10 when classes are balanced."""
    counts = np.bincount(predictions, minlength=N_CLASSES).astype(np.float64)
    shares = counts[counts > 0] / counts.sum()
    return float(-(shares * np.log(shares)).sum())


@torch.no_grad()
def generate(model: Any, n: int, seed: int = SAMPLE_SEED, batch_size: int = 1000) -> torch.Tensor:
    """Draw `n` images from a generative model with a seeded generator, on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    chunks = [model.sample(min(batch_size, n - start), generator).cpu() for start in range(0, n, batch_size)]
    return torch.cat(chunks).clamp(0.0, 1.0)


def score_samples(model: Any, data: FashionMNIST, classifier: CNN, n_samples: int = N_SAMPLES
                  ) -> dict[str, float]:
    """Return `sample/fid`, `sample/fid_floor` and `sample/class_entropy` of a generative model.

    The floor compares real training images (training and validation splits)
    with the test images, using as many training images as samples.
    """
    test_features, _ = classifier_outputs(classifier, data.test.float_images()[:n_samples])
    real = torch.cat([data.train.images, data.val.images])[:n_samples].unsqueeze(1).float() / 255.0
    real_features, _ = classifier_outputs(classifier, real)
    sample_features, sample_predictions = classifier_outputs(classifier, generate(model, n_samples))
    return {"sample/fid": frechet_distance(sample_features, test_features),
            "sample/fid_floor": frechet_distance(real_features, test_features),
            "sample/class_entropy": class_entropy(sample_predictions)}


def make_score_finisher(reference: ReferenceConfig | None = None, n_samples: int = N_SAMPLES) -> Finisher:
    """Return a finisher that scores a generative run's samples and logs the scores."""

    def finisher(finished: FinishedTraining) -> None:
        config = reference or ReferenceConfig.from_environment()
        classifier = reference_classifier(config, finished.data.source, finished.device)
        scores = score_samples(finished.model, finished.data, classifier, n_samples)
        finished.run.log_metrics(scores, step=finished.fit.state.epoch)
        finished.run.set_tags({"research.score_reference": config.key()})
        logger.info("Sample scores: FID %.3f (floor %.3f), class entropy %.3f of %.3f",
                    scores["sample/fid"], scores["sample/fid_floor"], scores["sample/class_entropy"],
                    math.log(N_CLASSES))

    return finisher


score_finisher = make_score_finisher()
