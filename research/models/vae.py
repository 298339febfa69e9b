"""The convolutional β-VAE (`vae`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from research.config import Config, param
from research.models import register_model
from research.models.base import Batch, Metrics, Model, TrainConfig
from research.nets.conv import ConvDecoder, ConvEncoder

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from research.data import FashionMNIST
    from research.tracking import Run

MANIFOLD_SIDE = 20  # the manifold figure decodes a 20 × 20 grid
MANIFOLD_QUANTILES = (0.01, 0.99)  # grid bounds; a few outlying codes would stretch a min-max grid
TRAVERSAL_VALUES = (-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0)  # ±3 prior standard deviations
MAX_TRAVERSAL_ROWS = 16
N_SAMPLES = 64


@dataclass(frozen=True)
class VAEConfig(Config):
    """Hyperparameters of the convolutional β-VAE."""

    n_channels: int = param(11, "channels of the first convolution; later ones use 2n and 4n", min=1, max=512)
    latent_dim: int = param(2, "size of the latent code", min=1, max=4096)
    beta: float = param(2.0, "weight of the KL term; above 1 favours disentangled latent factors", min=0.0)
    reconstruction: str = param("bce", "reconstruction term: per-pixel binary cross-entropy or squared "
                                       "error, summed over the image", choices=("bce", "mse"))
    batch_norm: bool = param(False, "batch normalisation after each hidden convolution")


@register_model("vae")
class VAE(Model):
    """Convolutional β-VAE: a Gaussian encoder q(z|x), the prior N(0, I) and a sigmoid decoder.

    The loss of a batch is recon_loss + beta * kl, both per image and averaged
    over the batch: recon_loss sums the per-pixel binary cross-entropy (or
    squared error) over the 784 pixels, and kl sums KL(q(z|x) || N(0, I)) over
    the latent dimensions. Summing per image keeps the two terms on the scale of
    the ELBO, so beta = 1 is the plain VAE. A per-pixel mean would shrink the
    reconstruction term 784-fold, which acts like a 784 times larger beta and
    pulls every posterior towards the prior.
    """

    Config = VAEConfig
    default_training = TrainConfig(n_epochs=10, batch_size=256, optimizer="adam", lr=1e-3)
    has_encoder = True
    can_generate = True

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        self.encoder = ConvEncoder(config.n_channels, 2 * config.latent_dim, config.batch_norm)
        self.decoder = ConvDecoder(config.n_channels, config.latent_dim, config.batch_norm)
        if not isinstance(self.decoder.features[-1], nn.Sigmoid):
            raise TypeError("VAE.decode_logits expects ConvDecoder to end in nn.Sigmoid")

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return mu and log_var (B, latent_dim) of q(z|x)."""
        mu, log_var = self.encoder(images).chunk(2, dim=1)
        return mu, log_var

    def reparameterize(self, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Return the posterior mean in eval mode and a posterior sample in training mode."""
        mu, log_var = self.posterior(images)
        return self.reparameterize(mu, log_var) if self.training else mu

    def decode_logits(self, codes: torch.Tensor) -> torch.Tensor:
        # Everything but the decoder's final sigmoid, so the BCE can be computed
        # from logits without overflow.
        return self.decoder.features[:-1](self.decoder.head(codes))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(codes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        codes = torch.randn(n, self.latent_dim, generator=generator).to(self.device)
        return self.decode(codes)

    def loss_terms(self, batch: Batch) -> Metrics:
        """Return loss, recon_loss and kl per image, from one posterior sample per image."""
        images, _ = batch
        mu, log_var = self.posterior(images)
        logits = self.decode_logits(self.reparameterize(mu, log_var))
        if self.config.reconstruction == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(logits, images, reduction="none")
        else:
            per_pixel = (torch.sigmoid(logits) - images) ** 2
        recon_loss = per_pixel.flatten(1).sum(1).mean()
        kl = (-0.5 * (1 + log_var - mu ** 2 - log_var.exp()).sum(1)).mean()
        return {"loss": recon_loss + self.config.beta * kl, "recon_loss": recon_loss, "kl": kl}

    @torch.no_grad()
    def test_metrics(self, data: FashionMNIST, batch_size: int) -> dict[str, float]:
        """Return the test terms and the ELBO, −(recon_loss + kl) per image (nats for bce)."""
        sums = {"loss": 0.0, "recon_loss": 0.0, "kl": 0.0}
        for images, labels in data.test.batches(batch_size, device=self.device):
            for key, value in self.loss_terms((images, labels)).items():
                sums[key] += value.item() * len(labels)
        means = {key: value / len(data.test) for key, value in sums.items()}
        return {**{f"test/{key}": value for key, value in means.items()},
                "test/elbo": -(means["recon_loss"] + means["kl"])}

    # --- figures ----------------------------------------------------------------------------

    @torch.no_grad()
    def on_train_end(self, run: Run, data: FashionMNIST) -> None:
        from research.figures import image_grid, reconstruction_figure

        self.eval()
        images = data.test.float_images()[:10].to(self.device)
        run.log_figure(reconstruction_figure(images, self(images)), "figures/reconstructions.png")
        samples = self.sample(N_SAMPLES, torch.Generator().manual_seed(0))
        run.log_image(image_grid(samples, 8), "figures/samples.png")
        if self.latent_dim == 2:
            run.log_figure(self.manifold_figure(data), "figures/manifold.png")
        else:
            run.log_figure(self.traversal_figure(data), "figures/traversal.png")

    def test_codes(self, data: FashionMNIST, batch_size: int = 1024) -> torch.Tensor:
        """Return the posterior means of every test image."""
        return torch.cat([self.encode(images) for images, _ in data.test.batches(batch_size, device=self.device)])

    @torch.no_grad()
    def manifold_figure(self, data: FashionMNIST) -> Figure:
        from research.figures import latent_manifold_figure

        codes = self.test_codes(data)
        low, high = torch.quantile(codes, torch.tensor(MANIFOLD_QUANTILES, device=codes.device), dim=0)
        z1 = torch.linspace(low[0].item(), high[0].item(), MANIFOLD_SIDE)
        z2 = torch.linspace(low[1].item(), high[1].item(), MANIFOLD_SIDE)
        # Row-major from the top row, which shows the largest z2.
        grid_z2, grid_z1 = torch.meshgrid(z2.flip(0), z1, indexing="ij")
        grid = torch.stack([grid_z1.flatten(), grid_z2.flatten()], dim=1).to(self.device)
        title = f"Decoded grid over the 1st to 99th percentile of test codes (beta {self.config.beta:g})"
        return latent_manifold_figure(self.decode(grid), z1.tolist(), z2.tolist(), title=title)

    @torch.no_grad()
    def traversal_figure(self, data: FashionMNIST) -> Figure:
        from research.figures import traversal_figure

        # The dimensions whose posterior means vary most over the test set carry the
        # information; with large latent_dim most others stay at the prior.
        spread = self.test_codes(data).var(0)
        dimensions = spread.argsort(descending=True)[:MAX_TRAVERSAL_ROWS].sort().values.tolist()
        values = torch.tensor(TRAVERSAL_VALUES)
        codes = torch.zeros(len(dimensions), len(values), self.latent_dim)
        for row, dimension in enumerate(dimensions):
            codes[row, :, dimension] = values
        images = self.decode(codes.reshape(-1, self.latent_dim).to(self.device))
        title = f"One latent dimension varied, the others at 0 (beta {self.config.beta:g})"
        return traversal_figure(images, dimensions, TRAVERSAL_VALUES, title=title)
