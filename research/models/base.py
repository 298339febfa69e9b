"""The contract between a model and the training loop.

A model owns its networks, its losses and its training step; the loop in
`research.training` owns epochs, devices, logging, checkpoints, early stopping
and signals. A model with one optimizer only implements `loss_terms`; a model
with several (a GAN) overrides `training_step`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from research.config import Config, param
from research.errors import UsageError

if TYPE_CHECKING:
    from research.data import FashionMNIST
    from research.tracking import Run

Batch = tuple[torch.Tensor, torch.Tensor]  # images (B, 1, 28, 28) in [0, 1], labels (B,)
Metrics = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainConfig(Config):
    """Training hyperparameters shared by every model; each model sets its defaults."""

    n_epochs: int = param(10, "number of training epochs", min=1)
    batch_size: int = param(256, "images per training batch", min=1)
    optimizer: str = param("adam", "optimizer", choices=("adam", "adamw", "rmsprop", "sgd"))
    lr: float = param(1e-3, "learning rate (the peak rate for onecycle)", min=0.0, min_exclusive=True)
    weight_decay: float = param(0.0, "L2 weight decay", min=0.0)
    momentum: float = param(0.9, "momentum for sgd and rmsprop", min=0.0, max=1.0)
    scheduler: str = param("none", "learning-rate schedule",
                           choices=("none", "cosine", "plateau", "onecycle"))
    patience: int = param(0, "epochs without a better monitored validation metric (loss; accuracy for "
                             "classifiers) before stopping early; 0 never stops", min=0)
    grad_clip: float = param(0.0, "maximum gradient norm; 0 disables clipping", min=0.0)


@dataclass(frozen=True)
class DataConfig(Config):
    """The train/validation split and the training-set size of a run."""

    val_fraction: float = param(0.2, "share of the 60,000 training images held out for validation",
                                min=0.0, max=0.9, min_exclusive=True)
    split_seed: int = param(0, "seed of the train/validation split", min=0)
    train_size: int | None = param(None, "keep only the first N training images (for quick runs)", min=1)


class Model(nn.Module):
    """Base class of every registered model.

    Subclasses set `Config` (their hyperparameter dataclass) and may override
    `default_training` (their `TrainConfig` defaults) and `monitor`, the
    validation metric that early stopping, the best checkpoint and the
    plateau scheduler follow, with `monitor_mode` "min" or "max"; `None`
    means the model has no validation metric and the last epoch counts as
    the best.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[Config]]
    default_training: ClassVar[TrainConfig] = TrainConfig()
    monitor: ClassVar[str | None] = "loss"
    monitor_mode: ClassVar[str] = "min"
    has_encoder: ClassVar[bool] = False
    # True for models that start from another trained model and cannot train without --from.
    needs_source: ClassVar[bool] = False
    can_generate: ClassVar[bool] = False
    # Named validation thresholds whose first crossing the run reports as
    # `epochs_to_<name>` and `seconds_to_<name>`: name -> (metric key, minimum value).
    milestones: ClassVar[Mapping[str, tuple[str, float]]] = {}

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config

    @classmethod
    def example_config(cls) -> Config:
        """Return a valid config for tests that build every registered model generically.

        The default config; a model that cannot be built from defaults alone
        (one that needs a trained encoder, say) overrides this.
        """
        return cls.Config()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # --- optimisation -----------------------------------------------------------

    def configure_optimizers(self, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        """Return the optimizers by name; the default is one over all parameters."""
        return {"main": build_optimizer(self.parameters(), train)}

    def loss_terms(self, batch: Batch) -> Metrics:
        """Return the loss terms of a batch; the key `loss` is the one minimised."""
        raise NotImplementedError

    def training_step(self, batch: Batch, optimizers: Mapping[str, torch.optim.Optimizer],
                      grad_clip: float = 0.0) -> Metrics:
        """Run one optimisation step and return its detached metrics."""
        optimizer = optimizers["main"]
        optimizer.zero_grad(set_to_none=True)
        terms = self.loss_terms(batch)
        terms["loss"].backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(self.parameters(), grad_clip)
        optimizer.step()
        return {key: value.detach() for key, value in terms.items()}

    @torch.no_grad()
    def validation_step(self, batch: Batch) -> Metrics:
        """Return the metrics of a batch without changing any weight."""
        return self.loss_terms(batch)

    # --- what a run reports beyond the per-epoch metrics --------------------------

    @torch.no_grad()
    def test_metrics(self, data: FashionMNIST, batch_size: int) -> dict[str, float]:
        """Return the final test-set metrics, keyed `test/<quantity>`."""
        return {}

    def on_fit_start(self) -> None:
        """Load the weights that training starts from, such as a pretrained encoder.

        The loop calls it before the first step of a new run; a resumed run skips
        it because its checkpoint already contains those weights.
        """

    def on_fit_end(self, data: FashionMNIST) -> None:
        """Fit what the trained weights imply (code statistics, say) before the best checkpoint is final."""

    def on_epoch_end(self, run: Run, epoch: int, data: FashionMNIST) -> None:
        """Log per-epoch artifacts (sample grids) to `run`."""

    def on_train_end(self, run: Run, data: FashionMNIST) -> None:
        """Log the final figures of the model to `run`."""

    # --- optional capabilities, announced by `has_encoder` and `can_generate` ----------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Map images (B, 1, 28, 28) in [0, 1] to latent codes (B, latent_dim)."""
        raise NotImplementedError(f"model {self.name!r} has no encoder")

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Generate `n` images (n, 1, 28, 28) in [0, 1], drawing noise from `generator`."""
        raise NotImplementedError(f"model {self.name!r} cannot generate images")

    # --- starting from another run (`research run MODEL --from SOURCE`) ----------------

    @classmethod
    def setup_from_source(cls, source: str) -> SourceSetup:
        """Return the overrides and run tags that start this model from `source`.

        `source` is a run id, a checkpoint path or a `models:/` URI. Models that
        start from scratch reject it.
        """
        raise UsageError(f"model {cls.name!r} trains from scratch and takes no --from {source!r}; "
                         "drop --from, or use a model that starts from a trained encoder (classifier)")

    # --- plain data for checkpoints -------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        """Return state beyond the weights that a checkpoint must keep (plain data)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what `extra_state` returned."""


@dataclass(frozen=True)
class SourceSetup:
    """The hyperparameter overrides and MLflow run tags that `--from` adds to a run."""

    overrides: dict[str, Any]
    tags: dict[str, str]


def build_optimizer(parameters: Any, train: TrainConfig) -> torch.optim.Optimizer:
    """Build the optimizer that `train.optimizer` names."""
    kwargs: dict[str, Any] = {"lr": train.lr, "weight_decay": train.weight_decay}
    if train.optimizer == "adam":
        return torch.optim.Adam(parameters, **kwargs)
    if train.optimizer == "adamw":
        return torch.optim.AdamW(parameters, **kwargs)
    if train.optimizer == "rmsprop":
        return torch.optim.RMSprop(parameters, momentum=train.momentum, **kwargs)
    return torch.optim.SGD(parameters, momentum=train.momentum, **kwargs)


def check_field_names(model_class: type[Model]) -> None:
    """Reject a model config that reuses a training or data field name.

    Overrides name a hyperparameter without its group (`-p lr=…`), so the
    names of the three groups must not overlap.
    """
    shared = {spec.name for spec in dataclasses.fields(TrainConfig)}
    shared |= {spec.name for spec in dataclasses.fields(DataConfig)}
    clash = shared & {spec.name for spec in dataclasses.fields(model_class.Config)}
    if clash:
        raise UsageError(f"model {model_class.__name__} config redefines {', '.join(sorted(clash))}, "
                         "which are training or data hyperparameters; rename them")
