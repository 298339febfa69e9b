"""The convolutional GAN (`dcgan`), trained and logged like `gan`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from research.config import param
from research.models import register_model
from research.models.base import TrainConfig
from research.models.gan import AdversarialConfig, AdversarialModel
from research.nets.gan import ConvDiscriminator, ConvGenerator

INIT_STD = 0.02


@dataclass(frozen=True)
class DCGANConfig(AdversarialConfig):
    """Hyperparameters of the convolutional GAN."""

    n_channels: int = param(32, "channels of the discriminator's first convolution and the generator's "
                                "last hidden layer; the layer next to the 7 × 7 map has 2n", min=1, max=512)


@register_model("dcgan")
class DCGAN(AdversarialModel):
    """Convolutional GAN: transposed convolutions with batch norm up to 28 × 28, strided convolutions down."""

    Config = DCGANConfig
    default_training = TrainConfig(n_epochs=10, batch_size=100, optimizer="adam", lr=2e-4)

    def build_networks(self, config: DCGANConfig) -> tuple[nn.Module, nn.Module]:
        generator = ConvGenerator(config.noise_dim, config.n_channels)
        discriminator = ConvDiscriminator(config.n_channels)
        generator.apply(init_weights)
        discriminator.apply(init_weights)
        return generator, discriminator


def init_weights(module: nn.Module) -> None:
    """Draw weights from N(0, 0.02) and batch-norm scales from N(1, 0.02), as Radford et al. (2016) do."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, INIT_STD)
        nn.init.zeros_(module.bias)
