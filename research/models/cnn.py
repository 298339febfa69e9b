"""A convolutional classifier trained from scratch (`cnn`), the baseline for `classifier`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from research.config import Config, param
from research.data import N_CLASSES
from research.models import register_model
from research.models.base import TrainConfig
from research.models.classification import ClassifierModel


@dataclass(frozen=True)
class CNNConfig(Config):
    """Hyperparameters of the from-scratch convolutional classifier."""

    n_channels: int = param(8, "channels of the first convolution; later ones use 2n and 4n", min=1, max=512)
    hidden_units: int = param(128, "units of the hidden fully connected layer", min=1, max=65536)
    batch_norm: bool = param(False, "batch normalisation after each convolution")
    dropout: float = param(0.0, "dropout before the output layer", min=0.0, max=0.9)


def conv_layer(in_channels: int, out_channels: int, kernel: int, batch_norm: bool) -> list[nn.Module]:
    # Strided convolutions halve the side instead of pooling, as in the reference baseline.
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride=2, padding=(kernel - 1) // 2)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


@register_model("cnn")
class CNN(ClassifierModel):
    """Strided convolutions (n, 2n, 4n channels), a hidden layer and 10 class logits, from scratch."""

    Config = CNNConfig
    default_training = TrainConfig(n_epochs=10, batch_size=128, optimizer="adam", lr=1e-3,
                                   scheduler="cosine", patience=3)

    def __init__(self, config: CNNConfig) -> None:
        super().__init__(config)
        n = config.n_channels
        self.body = nn.Sequential(
            *conv_layer(1, n, 4, config.batch_norm),  # 28 -> 14 (kernel 4, padding 1)
            *conv_layer(n, 2 * n, 5, config.batch_norm),  # 14 -> 7
            *conv_layer(2 * n, 4 * n, 5, config.batch_norm),  # 7 -> 4
            nn.Flatten(),  # (B, 4n, 4, 4) -> (B, 64n)
            nn.Linear(4 * n * 16, config.hidden_units),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_units, N_CLASSES)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.output(self.dropout(self.body(images)))
