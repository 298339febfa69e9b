"""Typed, validated hyperparameter dataclasses and the helpers around them.

Each model has one config dataclass. Its fields are declared with `param`, which
records the help text and the rule a value must satisfy; the config validates
itself when created. The same field names are used for CLI overrides
(`-p latent_dim=9`), MLflow params (`model.latent_dim`), Optuna search spaces
and checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from research.errors import ConfigError

C = TypeVar("C", bound="Config")


def param(default: Any, help: str, *, choices: Sequence[Any] | None = None,
          min: float | None = None, max: float | None = None,
          min_exclusive: bool = False) -> Any:
    """Declare a hyperparameter field with its default, help text and rule."""
    metadata = {"help": help, "choices": tuple(choices) if choices else None,
                "min": min, "max": max, "min_exclusive": min_exclusive}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Config:
    """Base class of every config: validates field types and rules on creation."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            coerced = coerce(spec.name, value, hints[spec.name])
            if coerced is not value:
                object.__setattr__(self, spec.name, coerced)
            check_rule(spec, coerced)
        self.validate()

    def validate(self) -> None:
        """Check rules that involve several fields; raise `ConfigError`."""

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as plain data (safe for YAML, MLflow and checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Build a config from plain data; unknown keys raise `ConfigError`."""
        known = {spec.name for spec in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(unknown[0], values[unknown[0]], f"not a hyperparameter of {cls.__name__}",
                              f"valid names: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self: C, **changes: Any) -> C:
        """Return a copy with `changes` applied and validated."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe(cls) -> list[ParamInfo]:
        """Return the name, type, default, help and rule of every field."""
        hints = typing.get_type_hints(cls)
        return [ParamInfo.from_field(spec, hints[spec.name]) for spec in dataclasses.fields(cls)]


@dataclass(frozen=True)
class ParamInfo:
    """The name, type, default, help and rule of one hyperparameter, as `research models` prints them."""

    name: str
    type_name: str
    default: Any
    help: str
    rule: str
    annotation: Any

    @classmethod
    def from_field(cls, spec: dataclasses.Field, annotation: Any) -> ParamInfo:
        return cls(name=spec.name, type_name=type_name(annotation), default=spec.default,
                   help=spec.metadata.get("help", ""), rule=describe_rule(spec),
                   annotation=annotation)


def type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def describe_rule(spec: dataclasses.Field) -> str:
    meta = spec.metadata
    if meta.get("choices"):
        return "one of " + ", ".join(str(choice) for choice in meta["choices"])
    parts = []
    if meta.get("min") is not None:
        parts.append(f"{'>' if meta.get('min_exclusive') else '>='} {meta['min']}")
    if meta.get("max") is not None:
        parts.append(f"<= {meta['max']}")
    return " and ".join(parts)


def check_rule(spec: dataclasses.Field, value: Any) -> None:
    meta = spec.metadata
    if value is None:
        return
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(spec.name, value, describe_rule(spec),
                          f"use one of: {', '.join(str(c) for c in choices)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(spec.name, value, "must be a finite number")
    low, high = meta.get("min"), meta.get("max")
    if low is not None and (value < low or (meta.get("min_exclusive") and value == low)):
        raise ConfigError(spec.name, value, f"must be {describe_rule(spec)}")
    if high is not None and value > high:
        raise ConfigError(spec.name, value, f"must be {describe_rule(spec)}")


def coerce(name: str, value: Any, annotation: Any) -> Any:
    """Convert `value` to `annotation`, accepting strings as the CLI gives them."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return coerce(name, value, options[0])
    if annotation is bool:
        return parse_bool(name, value)
    if annotation is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(name, value, "must be an integer")
        try:
            return value if type(value) is int else int(str(value).strip())
        except ValueError:
            raise ConfigError(name, value, "must be an integer") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(name, value, "must be a number")
        try:
            return value if type(value) is float else float(str(value).strip())
        except ValueError:
            raise ConfigError(name, value, "must be a number") from None
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(name, value, "must be a string")
        return value
    return value


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(name, value, "must be a boolean", "use true or false")


def flatten(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten nested mappings into dotted keys: {'a': {'b': 1}} → {'a.b': 1}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(flatten(dotted, value))
        else:
            flat[dotted] = value
    return flat
