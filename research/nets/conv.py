"""The convolutional encoder and decoder of the reference autoencoder.

Spatial sizes for a 28×28 input: 28 → 14 (kernel 4, stride 2, padding 1)
→ 7 (3, 2, 1) → 3 (3, 2, 0), so the last feature map is 4n × 3 × 3.
"""

from __future__ import annotations

import torch
from torch import nn

FEATURE_SIDE = 3
HIDDEN_UNITS = 64


def conv_block(conv: nn.Module, channels: int, batch_norm: bool) -> list[nn.Module]:
    layers = [conv]
    if batch_norm:
        layers.append(nn.BatchNorm2d(channels))
    layers.append(nn.ReLU(inplace=True))
    return layers


class ConvEncoder(nn.Module):
    """Map images (B, 1, 28, 28) to vectors (B, out_dim)."""

    def __init__(self, n_channels: int, out_dim: int, batch_norm: bool = False) -> None:
        super().__init__()
        n = n_channels
        self.out_dim = out_dim
        self.features = nn.Sequential(
            *conv_block(nn.Conv2d(1, n, 4, stride=2, padding=1), n, batch_norm),
            *conv_block(nn.Conv2d(n, 2 * n, 3, stride=2, padding=1), 2 * n, batch_norm),
            *conv_block(nn.Conv2d(2 * n, 4 * n, 3, stride=2, padding=0), 4 * n, batch_norm),
            nn.Flatten(),  # (B, 4n, 3, 3) -> (B, 36n)
        )
        self.head = nn.Sequential(
            nn.Linear(4 * n * FEATURE_SIDE ** 2, HIDDEN_UNITS),
            nn.ReLU(inplace=True),
            nn.Linear(HIDDEN_UNITS, out_dim),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class ConvDecoder(nn.Module):
    """Map vectors (B, latent_dim) to images (B, 1, 28, 28) in [0, 1]."""

    def __init__(self, n_channels: int, latent_dim: int, batch_norm: bool = False) -> None:
        super().__init__()
        n = n_channels
        self.head = nn.Sequential(
            nn.Linear(latent_dim, HIDDEN_UNITS),
            nn.ReLU(inplace=True),
            nn.Linear(HIDDEN_UNITS, 4 * n * FEATURE_SIDE ** 2),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (4 * n, FEATURE_SIDE, FEATURE_SIDE)),  # (B, 36n) -> (B, 4n, 3, 3)
        )
        self.features = nn.Sequential(
            *conv_block(nn.ConvTranspose2d(4 * n, 2 * n, 3, stride=2, padding=0), 2 * n, batch_norm),
            *conv_block(nn.ConvTranspose2d(2 * n, n, 3, stride=2, padding=1, output_padding=1),
                        n, batch_norm),
            nn.ConvTranspose2d(n, 1, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.features(self.head(codes))
