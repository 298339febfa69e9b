"""Generators and discriminators for 28×28 greyscale images.

A generator maps noise (B, noise_dim) to images (B, 1, 28, 28) in [-1, 1]
(tanh). A discriminator maps such images to logits (B,): the sigmoid that turns
a logit into the probability that the image is real is left to the loss, where
`binary_cross_entropy_with_logits` computes it without overflow.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGE_PIXELS = 28 * 28
LEAKY_SLOPE = 0.2


class MLPGenerator(nn.Module):
    """Fully connected generator: noise → hidden → hidden (ReLU) → 784 (tanh)."""

    def __init__(self, noise_dim: int, hidden_units: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(noise_dim, hidden_units),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_units, hidden_units),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_units, IMAGE_PIXELS),
            nn.Tanh(),
            nn.Unflatten(1, (1, 28, 28)),  # (B, 784) -> (B, 1, 28, 28)
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.layers(noise)


class MLPDiscriminator(nn.Module):
    """Fully connected discriminator: 784 → hidden → hidden (LeakyReLU 0.2) → 1 logit."""

    def __init__(self, hidden_units: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),  # (B, 1, 28, 28) -> (B, 784)
            nn.Linear(IMAGE_PIXELS, hidden_units),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Linear(hidden_units, hidden_units),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Linear(hidden_units, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images).squeeze(1)


class ConvGenerator(nn.Module):
    """DCGAN generator: noise → 2n × 7 × 7 → n × 14 × 14 → 1 × 28 × 28 (tanh).

    Transposed convolutions with kernel 4, stride 2 and padding 1 double the side;
    batch norm and ReLU follow every layer but the last, as in Radford et al. (2016).
    """

    def __init__(self, noise_dim: int, n_channels: int) -> None:
        super().__init__()
        n = n_channels
        self.head = nn.Sequential(
            nn.Linear(noise_dim, 2 * n * 7 * 7, bias=False),
            nn.Unflatten(1, (2 * n, 7, 7)),  # (B, 98n) -> (B, 2n, 7, 7)
            nn.BatchNorm2d(2 * n),
            nn.ReLU(inplace=True),
        )
        self.features = nn.Sequential(
            nn.ConvTranspose2d(2 * n, n, 4, stride=2, padding=1, bias=False),  # -> (B, n, 14, 14)
            nn.BatchNorm2d(n),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(n, 1, 4, stride=2, padding=1),  # -> (B, 1, 28, 28)
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.features(self.head(noise))


class ConvDiscriminator(nn.Module):
    """DCGAN discriminator: 1 × 28 × 28 → n × 14 × 14 → 2n × 7 × 7 → 1 logit.

    Strided convolutions replace pooling; LeakyReLU 0.2 everywhere and batch norm
    on the hidden layer but not on the input layer, as in Radford et al. (2016).
    """

    def __init__(self, n_channels: int) -> None:
        super().__init__()
        n = n_channels
        self.features = nn.Sequential(
            nn.Conv2d(1, n, 4, stride=2, padding=1),  # -> (B, n, 14, 14)
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Conv2d(n, 2 * n, 4, stride=2, padding=1, bias=False),  # -> (B, 2n, 7, 7)
            nn.BatchNorm2d(2 * n),
            nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Flatten(),  # (B, 2n, 7, 7) -> (B, 98n)
            nn.Linear(2 * n * 7 * 7, 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images).squeeze(1)
