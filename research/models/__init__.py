"""The model registry and the built-in models.

Register a model with `@register_model("name")` on a `Model` subclass whose
`Config` attribute is its hyperparameter dataclass. Installed distributions add
models through the entry-point group `research.models`.
"""

from __future__ import annotations

from collections.abc import Callable

from registry import Registry
from research.models.base import Batch, DataConfig, Metrics, Model, TrainConfig, check_field_names

MODEL_ENTRY_POINT_GROUP = "research.models"

MODELS: Registry[type[Model]] = Registry("model", entry_point_group=MODEL_ENTRY_POINT_GROUP)


def register_model(name: str) -> Callable[[type[Model]], type[Model]]:
    """Register a `Model` subclass under `name`."""

    def decorator(model_class: type[Model]) -> type[Model]:
        check_field_names(model_class)
        model_class.name = name
        MODELS.add(name, model_class)
        return model_class

    return decorator


def find_model_or_raise(name: str) -> type[Model]:
    """Return the model class registered as `name`; unknown names raise `UnknownNameError`."""
    return MODELS.get(name)


# Importing the built-in models registers them.
from research.models import ae, classifier, cnn, dcgan, gan, vae  # noqa: E402,F401

__all__ = ["MODELS", "Batch", "DataConfig", "Metrics", "Model", "TrainConfig", "find_model_or_raise",
           "register_model"]
