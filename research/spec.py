"""What one training run is: a model, its hyperparameters, the data split and a seed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from research.config import Config, flatten
from research.errors import ConfigError, UsageError
from research.models import DataConfig, Model, TrainConfig, find_model_or_raise

GROUPS = ("model", "train", "data")


@dataclass(frozen=True)
class RunSpec:
    """A complete, validated description of one training run."""

    model_name: str
    model: Config
    train: TrainConfig
    data: DataConfig
    seed: int = 0

    @property
    def model_class(self) -> type[Model]:
        return find_model_or_raise(self.model_name)

    def to_dict(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "seed": self.seed, "model": self.model.to_dict(),
                "train": self.train.to_dict(), "data": self.data.to_dict()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunSpec:
        model_class = find_model_or_raise(values["model_name"])
        return cls(model_name=values["model_name"], seed=int(values["seed"]),
                   model=model_class.Config.from_dict(values["model"]),
                   train=TrainConfig.from_dict(values["train"]),
                   data=DataConfig.from_dict(values["data"]))

    def params(self) -> dict[str, Any]:
        """Return every value as a flat dict of dotted names, as logged to MLflow."""
        values = self.to_dict()
        return {"model_name": self.model_name, "seed": self.seed,
                **flatten("", {group: values[group] for group in GROUPS})}


def param_names(model_name: str) -> dict[str, str]:
    """Map every hyperparameter name of a model to its group (model, train or data)."""
    model_class = find_model_or_raise(model_name)
    groups = {"model": model_class.Config, "train": TrainConfig, "data": DataConfig}
    return {spec.name: group for group, config_class in groups.items()
            for spec in dataclasses.fields(config_class)}


def split_override(text: str) -> tuple[str, str]:
    """Split `name=value`; raise `ConfigError` when there is no `=`."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ConfigError("-p", text, "an override has the form name=value", "for example -p latent_dim=4")
    return name.strip(), value.strip()


def build_spec(model_name: str, overrides: Mapping[str, Any] | Sequence[str] = (), *,
               seed: int = 0) -> RunSpec:
    """Build a validated `RunSpec` from a model's defaults and overrides.

    Overrides name a hyperparameter plainly (`latent_dim`) or with its group
    (`model.latent_dim`, `train.lr`); values may be strings, as the CLI gives
    them, and are converted and checked by the config classes.
    """
    model_class = find_model_or_raise(model_name)
    if not isinstance(overrides, Mapping):
        overrides = dict(split_override(text) for text in overrides)
    names = param_names(model_name)
    grouped: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    for key, value in overrides.items():
        group, _, name = key.rpartition(".")
        if name not in names or (group and names[name] != group):
            raise UsageError(f"unknown hyperparameter {key!r} for model {model_name!r}; valid names: "
                             f"{', '.join(sorted(names))} (see `research models`)")
        grouped[names[name]][name] = value
    return RunSpec(model_name=model_name, seed=seed,
                   model=model_class.Config.from_dict(grouped["model"]),
                   train=model_class.default_training.replace(**grouped["train"]),
                   data=DataConfig.from_dict(grouped["data"]))
