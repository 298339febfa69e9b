"""A classifier on top of the encoder of a trained model (`classifier`).

`research run classifier --from SOURCE` reads the source checkpoint, stores the
source model's name and config as plain data in this model's config, and
loads the source weights when training starts (`on_fit_start`). A classifier
checkpoint therefore rebuilds its whole network, encoder included, from its own
config and weights, without the source run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from research.config import Config, param
from research.data import IMAGE_SIZE, N_CLASSES
from research.errors import CheckpointError, ConfigError, UsageError
from research.models import MODELS, find_model_or_raise, register_model
from research.models.base import Model, SourceSetup, TrainConfig, build_optimizer
from research.models.classification import ClassifierModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassifierConfig(Config):
    """Hyperparameters of the classifier; `--from` sets the three source fields."""

    source: str = param("", "run id, checkpoint path or models:/ URI of the trained encoder (set by --from)")
    encoder_model: str = param("ae", "registered model that provides the encoder (set by --from)")
    encoder_config: str = param("{}", "that model's config as a JSON object (set by --from)")
    mode: str = param("finetune", "freeze trains the head only; finetune trains the encoder too",
                      choices=("freeze", "finetune"))
    encoder_lr_scale: float = param(0.3, "encoder learning rate as a multiple of lr (finetune mode)",
                                    min=0.0, max=10.0, min_exclusive=True)
    hidden_units: int = param(128, "units of the hidden layer between the code and the logits",
                              min=1, max=65536)
    dropout: float = param(0.3, "dropout before the output layer", min=0.0, max=0.9)

    def validate(self) -> None:
        try:
            values = json.loads(self.encoder_config)
        except json.JSONDecodeError as error:
            raise ConfigError("encoder_config", self.encoder_config, f"must be a JSON object ({error.msg})",
                              "let --from set it") from None
        if not isinstance(values, dict):
            raise ConfigError("encoder_config", self.encoder_config, "must be a JSON object",
                              "let --from set it")

    def encoder_values(self) -> dict[str, Any]:
        return dict(json.loads(self.encoder_config))


def encoder_model_names() -> list[str]:
    return [entry.name for entry in MODELS.entries() if entry.component.has_encoder]


def check_has_encoder(model_name: str, where: str) -> None:
    """Reject a source whose model has no encoder, naming the models that do."""
    if model_name in MODELS.names() and find_model_or_raise(model_name).has_encoder:
        return
    raise UsageError(f"--from: {where} is of model {model_name!r}, which has no encoder; the classifier "
                     f"needs a run or checkpoint of a model with an encoder ({', '.join(encoder_model_names())})")


@register_model("classifier")
class Classifier(ClassifierModel):
    """The encoder of a trained model, then a hidden layer (ReLU) and 10 class logits."""

    Config = ClassifierConfig
    needs_source = True
    # With the config's encoder_lr_scale 0.3 and dropout 0.3, fine-tuning the default
    # autoencoder for 10 epochs reached 91.4 % test accuracy, against 90.5 % with
    # lr 0.001 for all weights and no regularisation (runs in docs/benchmarks.md).
    default_training = TrainConfig(n_epochs=10, batch_size=128, optimizer="adam", lr=3e-3, weight_decay=1e-4,
                                   scheduler="cosine", patience=3)

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        check_has_encoder(config.encoder_model, f"encoder_model {config.encoder_model!r}")
        encoder_class = find_model_or_raise(config.encoder_model)
        self.backbone: Model = encoder_class(encoder_class.Config.from_dict(config.encoder_values()))
        latent_dim = self.code_size()
        self.hidden = nn.Sequential(nn.Linear(latent_dim, config.hidden_units), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_units, N_CLASSES)
        if self.frozen:
            self.backbone.requires_grad_(False)
        self.train()

    @property
    def frozen(self) -> bool:
        return self.config.mode == "freeze"

    def code_size(self) -> int:
        """Return the size of the codes, and fix the backbone parameters that `encode` does not use.

        The backbone is the whole source model, so an autoencoder's decoder comes
        along; it gets no gradient and must not count as trained.
        """
        self.backbone.eval()
        codes = self.backbone.encode(torch.zeros(2, 1, IMAGE_SIZE, IMAGE_SIZE))
        codes.sum().backward()
        for parameter in self.backbone.parameters():
            if parameter.grad is None:
                parameter.requires_grad_(False)
            parameter.grad = None
        return int(codes.shape[1])

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.frozen:  # a frozen encoder keeps its batch-norm statistics too
            self.backbone.eval()
        return self

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode(images)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.hidden(self.encode(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.output(self.dropout(self.features(images)))

    def configure_optimizers(self, train: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        head = [*self.hidden.parameters(), *self.output.parameters()]
        if self.frozen:
            return {"main": build_optimizer(head, train)}
        groups = [{"params": head},
                  {"params": [parameter for parameter in self.backbone.parameters() if parameter.requires_grad],
                   "lr": train.lr * self.config.encoder_lr_scale}]
        return {"main": build_optimizer(groups, train)}

    # --- the source -----------------------------------------------------------------------

    @classmethod
    def setup_from_source(cls, source: str) -> SourceSetup:
        from research.sources import load_source_checkpoint

        found = load_source_checkpoint(source, check_has_encoder)
        check_has_encoder(found.model_name, f"checkpoint {source!r}")
        overrides = {"source": source, "encoder_model": found.model_name,
                     "encoder_config": json.dumps(found.checkpoint["config"], sort_keys=True)}
        tags = {"research.source": source, "research.source_model": found.model_name}
        if found.run_id:
            tags["research.source_run_id"] = found.run_id
        return SourceSetup(overrides, tags)

    def on_fit_start(self) -> None:
        from research.sources import load_source_checkpoint

        if not self.config.source:
            raise UsageError("the classifier needs a trained encoder: pass --from RUN_ID, a checkpoint "
                             "path or a models:/ URI (or -p source=… when calling the API)")
        found = load_source_checkpoint(self.config.source, check_has_encoder)
        same_model = found.model_name == self.config.encoder_model
        if not same_model or found.checkpoint["config"] != self.config.encoder_values():
            raise CheckpointError(f"source {self.config.source!r} now holds model {found.model_name!r} with "
                                  f"config {found.checkpoint['config']}, but this classifier was set up for "
                                  f"{self.config.encoder_model!r} with {self.config.encoder_config}; "
                                  "start the run again with --from")
        try:
            self.backbone.load_state_dict(found.checkpoint["model_state"])
        except RuntimeError as error:
            raise CheckpointError(f"source {self.config.source!r}: weights do not fit model "
                                  f"{found.model_name!r}: {str(error).splitlines()[0]}") from None
        self.backbone.load_extra_state(found.checkpoint.get("extra_state", {}))
        logger.info("Encoder of %s loaded from %s (%s)", found.model_name, self.config.source, self.config.mode)

    def extra_state(self) -> dict[str, Any]:
        return {"encoder": self.backbone.extra_state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.backbone.load_extra_state(state.get("encoder", {}))
