"""Generative adversarial networks: the shared step in `AdversarialModel` and the reference `gan`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from research.config import Config, param
from research.models import register_model
from research.models.base import Batch, Metrics, Model, TrainConfig, build_optimizer
from research.nets.gan import MLPDiscriminator, MLPGenerator

if TYPE_CHECKING:
    from research.data import FashionMNIST
    from research.tracking import Run

N_FIXED_SAMPLES = 64  # images in each per-epoch grid, 8 × 8
FIXED_NOISE_SEED = 0
GIF_FRAME_MS = 400
SCORE_KEYS = ("train/d_real", "train/d_fake", "val/d_real", "val/d_fake")


@dataclass(frozen=True)
class AdversarialConfig(Config):
    """Hyperparameters every GAN has."""

    noise_dim: int = param(64, "size of the N(0, I) noise vector fed to the generator", min=1, max=4096)
    adam_beta1: float = param(0.5, "Adam's first-moment decay for both networks (used when optimizer is adam)",
                              min=0.0, max=1.0)


class AdversarialModel(Model):
    """A generator and a discriminator trained against each other with binary cross-entropy.

    Subclasses build the two networks in `build_networks`. Images are scaled from
    [0, 1] to [-1, 1] inside the step, the range of the generator's tanh. Each step
    updates the discriminator once on a real and a generated batch, then the
    generator once with the non-saturating loss −log D(G(z)).

    The training step returns `d_loss` (the sum of the discriminator's BCE on real
    and on generated images), `g_loss`, `d_real` (mean D(x)) and `d_fake` (mean
    D(G(z)) before the discriminator's update). Adam uses betas (adam_beta1, 0.999);
    β1 = 0.5 follows Radford, Metz and Chintala, "Unsupervised Representation
    Learning with Deep Convolutional Generative Adversarial Networks" (ICLR 2016),
    who found that the usual 0.9 made training oscillate and become unstable.
    """

    Config = AdversarialConfig
    monitor = None  # neither loss measures sample quality, so the last epoch counts as the best
    can_generate = True

    def __init__(self, config: AdversarialConfig) -> None:
        super().__init__(config)
        self.generator, self.discriminator = self.build_networks(config)
        # A dedicated generator keeps the global RNG stream, and so the weight
        # initialisation, the same as without the fixed noise; the buffer puts the
        # noise in checkpoints, so a resumed run keeps drawing the same grid.
        noise = torch.randn(N_FIXED_SAMPLES, config.noise_dim,
                            generator=torch.Generator().manual_seed(FIXED_NOISE_SEED))
        self.register_buffer("fixed_noise", noise)
        self.progress_grids: list[torch.Tensor] = []  # uint8 (64, 28, 28) from the fixed noise, one per epoch

    def build_networks(self, config: Any) -> tuple[nn.Module, nn.Module]:
        """Return the generator and the discriminator (which outputs logits)."""
        raise NotImplementedError

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """Generate images (B, 1, 28, 28) in [0, 1] from noise (B, noise_dim)."""
        return (self.generator(noise) + 1.0) / 2.0

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(n, self.config.noise_dim, generator=generator).to(self.device)
        return self(noise)

    # --- optimisation -------------------------------------------------------------------

    def configure_optimizers(self, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.build_optimizer(self.generator, train),
                "discriminator": self.build_optimizer(self.discriminator, train)}

    def build_optimizer(self, network: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
        if train.optimizer == "adam":
            return torch.optim.Adam(network.parameters(), lr=train.lr, weight_decay=train.weight_decay,
                                    betas=(self.config.adam_beta1, 0.999))
        return build_optimizer(network.parameters(), train)

    def noise_like(self, images: torch.Tensor) -> torch.Tensor:
        return torch.randn(len(images), self.config.noise_dim, device=images.device)

    def training_step(self, batch: Batch, optimizers: Mapping[str, torch.optim.Optimizer],
                      grad_clip: float = 0.0) -> Metrics:
        real = batch[0] * 2.0 - 1.0
        fake = self.generator(self.noise_like(real))

        d_optimizer = optimizers["discriminator"]
        d_optimizer.zero_grad(set_to_none=True)
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(fake.detach())
        d_loss = discriminator_loss(real_logits, fake_logits)
        d_loss.backward()
        clip_and_step(self.discriminator, d_optimizer, grad_clip)

        g_optimizer = optimizers["generator"]
        g_optimizer.zero_grad(set_to_none=True)
        g_loss = generator_loss(self.discriminator(fake))
        g_loss.backward()
        clip_and_step(self.generator, g_optimizer, grad_clip)

        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                "d_real": torch.sigmoid(real_logits).mean().detach(),
                "d_fake": torch.sigmoid(fake_logits).mean().detach()}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> Metrics:
        """Return the step's four metrics on held-out real images and fresh noise, updating nothing.

        A rising validation d_loss against a falling training d_loss shows the
        discriminator memorising the training images.
        """
        real = batch[0] * 2.0 - 1.0
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(self.generator(self.noise_like(real)))
        return {"d_loss": discriminator_loss(real_logits, fake_logits),
                "g_loss": generator_loss(fake_logits),
                "d_real": torch.sigmoid(real_logits).mean(),
                "d_fake": torch.sigmoid(fake_logits).mean()}

    @torch.no_grad()
    def test_metrics(self, data: FashionMNIST, batch_size: int) -> dict[str, float]:
        sums: dict[str, float] = {}
        for images, labels in data.test.batches(batch_size, device=self.device):
            for key, value in self.validation_step((images, labels)).items():
                sums[key] = sums.get(key, 0.0) + value.item() * len(labels)
        return {f"test/{key}": value / len(data.test) for key, value in sums.items()}

    # --- artifacts ------------------------------------------------------------------------

    @torch.no_grad()
    def on_epoch_end(self, run: Run, epoch: int, data: FashionMNIST) -> None:
        from research.figures import image_grid

        self.eval()
        images = self(self.fixed_noise)
        grid = (images.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        self.progress_grids.append(grid)
        run.log_image(image_grid(images, 8), f"samples/epoch_{epoch:04d}.png")

    def on_train_end(self, run: Run, data: FashionMNIST) -> None:
        from research.figures import image_grid, score_curve_figure

        if self.progress_grids:
            frames = [image_grid(grid, 8, value_range=(0.0, 255.0)) for grid in self.progress_grids]
            run.log_image(frames[0], "samples/progress.gif", save_all=True, append_images=frames[1:],
                          duration=GIF_FRAME_MS, loop=0)
        history = {key: run.metric_history(key) for key in SCORE_KEYS}
        if any(history.values()):
            run.log_figure(score_curve_figure(history, title=f"{self.name} discriminator scores"),
                           "figures/scores.png")

    # --- checkpoints --------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        # The grids behind the progress GIF, so a resumed run's GIF starts at epoch 1.
        if not self.progress_grids:
            return {}
        return {"progress_grids": torch.stack(self.progress_grids)}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        grids = state.get("progress_grids")
        self.progress_grids = list(grids.unbind(0)) if grids is not None else []


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Return BCE(D(x), 1) + BCE(D(G(z)), 0), each averaged over the batch."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Return BCE(D(G(z)), 1), the non-saturating generator loss."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def clip_and_step(network: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
    optimizer.step()


@dataclass(frozen=True)
class GANConfig(AdversarialConfig):
    """Hyperparameters of the fully connected GAN."""

    hidden_units: int = param(256, "units of each of the two hidden layers in both networks", min=1, max=8192)


@register_model("gan")
class GAN(AdversarialModel):
    """The reference fully connected GAN: 64-d noise → 256 → 256 → 784, and 784 → 256 → 256 → 1."""

    Config = GANConfig
    default_training = TrainConfig(n_epochs=20, batch_size=100, optimizer="adam", lr=2e-4)

    def build_networks(self, config: GANConfig) -> tuple[nn.Module, nn.Module]:
        return MLPGenerator(config.noise_dim, config.hidden_units), MLPDiscriminator(config.hidden_units)
