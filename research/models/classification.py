"""What every FashionMNIST classifier shares: its loss, metrics and final figures.

A subclass builds its networks and implements `features` (the penultimate
layer) and `logits`; this base adds cross-entropy training, `val/acc`, the test
accuracy overall and per class, a confusion matrix, a grid of misclassified
test images, and the `val_acc_85` milestone that measures how fast it learns.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from research.data import CLASS_NAMES, N_CLASSES
from research.models.base import Batch, Metrics, Model

if TYPE_CHECKING:
    from research.data import FashionMNIST, Split
    from research.tracking import Run

N_MISCLASSIFIED_SHOWN = 32


def metric_suffix(class_name: str) -> str:
    """Turn a class name into a metric-key suffix: 'T-shirt/top' -> 't_shirt_top'."""
    return re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_")


class ClassifierModel(Model):
    """Base class of models that predict the FashionMNIST class of an image."""

    # Accuracy, not loss: a classifier's validation loss starts rising while its
    # accuracy still improves (fine-tuned from an autoencoder, loss was lowest at
    # epoch 4 and accuracy highest at epoch 7 of 10).
    monitor = "acc"
    monitor_mode = "max"
    milestones: ClassVar[dict[str, tuple[str, float]]] = {"val_acc_85": ("val/acc", 0.85)}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Map images (B, 1, 28, 28) in [0, 1] to penultimate-layer features (B, F)."""
        raise NotImplementedError

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Map images (B, 1, 28, 28) in [0, 1] to class logits (B, 10)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images)

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Return class probabilities (B, 10) of images (B, 1, 28, 28) in [0, 1]."""
        return F.softmax(self.logits(images.to(self.device)), dim=1)

    def loss_terms(self, batch: Batch) -> Metrics:
        images, labels = batch
        logits = self.logits(images)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return {"loss": F.cross_entropy(logits, labels), "acc": accuracy}

    @torch.no_grad()
    def predict_split(self, split: Split, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the predicted classes and the mean cross-entropy over a split."""
        predictions, loss_sum = [], 0.0
        for images, labels in split.batches(batch_size, device=self.device):
            logits = self.logits(images)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            predictions.append(logits.argmax(1).cpu())
        return torch.cat(predictions), torch.tensor(loss_sum / max(len(split), 1))

    @torch.no_grad()
    def test_metrics(self, data: FashionMNIST, batch_size: int) -> dict[str, float]:
        predicted, loss = self.predict_split(data.test, batch_size)
        labels = data.test.labels
        metrics = {"test/acc": (predicted == labels).float().mean().item(), "test/loss": loss.item()}
        for index, name in enumerate(CLASS_NAMES):
            in_class = labels == index
            if in_class.any():
                metrics[f"test/acc_{metric_suffix(name)}"] = (predicted[in_class] == index).float().mean().item()
        return metrics

    def on_train_end(self, run: Run, data: FashionMNIST) -> None:
        from research.figures import confusion_matrix_figure, misclassified_figure

        predicted, _ = self.predict_split(data.test, 1024)
        labels = data.test.labels
        counts = np.zeros((N_CLASSES, N_CLASSES), dtype=np.int64)
        np.add.at(counts, (labels.numpy(), predicted.numpy()), 1)
        run.log_figure(confusion_matrix_figure(counts, CLASS_NAMES), "figures/confusion_matrix.png")

        wrong = torch.nonzero(predicted != labels).flatten()[:N_MISCLASSIFIED_SHOWN]
        images = data.test.images[wrong].unsqueeze(1).float() / 255.0
        run.log_figure(misclassified_figure(images, labels[wrong].tolist(), predicted[wrong].tolist(),
                                            CLASS_NAMES), "figures/misclassified.png")
