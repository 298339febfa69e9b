"""Sweep definitions: what one named Optuna study searches and how it judges trials.

A sweep file in `sweeps/` is YAML with these keys:

    model: ae                      # a registered model
    objective: {metric: val/loss, direction: minimize}
    n_trials: 100                  # target of finished (complete + pruned) trials
    n_epochs: 5                    # epochs of each trial
    fixed: {batch_size: 256}       # overrides shared by every trial (optional)
    search_space:
      latent_dim: {type: int, low: 2, high: 10}
      lr: {type: float, low: 1.0e-5, high: 1.0e-1, log: true}
      optimizer: {type: categorical, choices: [adam, sgd]}
    sampler: {type: tpe, seed: 0}  # optional; tpe or random
    pruner: {type: percentile, percentile: 50}  # optional; median, percentile, hyperband, none

Structure and ranges are checked when the file is read. Hyperparameter names are
checked against the model's config when the model is registered, so a sweep for
a model from a plugin that is not installed still lists.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from research.errors import UsageError

REQUIRED_KEYS = ("model", "objective", "n_trials", "n_epochs", "search_space")
OPTIONAL_KEYS = ("description", "fixed", "sampler", "pruner")
PARAM_TYPES = ("int", "float", "categorical")
DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("tpe", "random")
PRUNER_OPTIONS: dict[str, tuple[str, ...]] = {
    "none": (),
    "median": ("n_startup_trials", "n_warmup_steps"),
    "percentile": ("percentile", "n_startup_trials", "n_warmup_steps"),
    "hyperband": ("min_resource", "reduction_factor"),
}


class SweepFileError(UsageError):
    """A sweep file is missing a key, names an unknown hyperparameter or breaks a rule."""

    def __init__(self, source: str, key: str, rule: str, fix: str = "") -> None:
        self.source = source
        self.key = key
        self.rule = rule
        message = f"invalid sweep file {source}: key '{key}': {rule}"
        super().__init__(message + (f"; {fix}" if fix else ""))


@dataclass(frozen=True)
class ParamSpace:
    """The range of one searched hyperparameter."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Draw a value from `trial` (an `optuna.Trial`)."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            step = int(self.step) if self.step else 1
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        """Return the range as plain data, as stored with a study to detect changes."""
        if self.type == "categorical":
            return {"type": self.type, "choices": list(self.choices)}
        values: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            values["step"] = self.step
        return values


@dataclass(frozen=True)
class SweepDefinition:
    """One named sweep: a model, an objective, a search space, a sampler and a pruner."""

    name: str
    model: str
    metric: str
    direction: str
    n_trials: int
    n_epochs: int
    space: tuple[ParamSpace, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"type": "tpe", "seed": 0})
    pruner: Mapping[str, Any] = field(default_factory=lambda: {"type": "median"})
    description: str = ""
    source: str = "<memory>"

    def space_dict(self) -> dict[str, dict[str, Any]]:
        return {param.name: param.to_dict() for param in self.space}

    def check_model(self) -> None:
        """Check the model name and every hyperparameter name against the model's config.

        Raises `SweepFileError` naming the file and the key; call it before the
        sweep is used, once the model is registered.
        """
        from registry import UnknownNameError
        from research.models import MODELS
        from research.spec import param_names

        try:
            names = param_names(self.model)
        except UnknownNameError:
            raise SweepFileError(self.source, "model", f"{self.model!r} is not a registered model",
                                 f"registered models: {', '.join(MODELS.names())}") from None
        for section, keys in (("search_space", [param.name for param in self.space]),
                              ("fixed", list(self.fixed))):
            for key in keys:
                if key.rpartition(".")[2] not in names:
                    raise SweepFileError(self.source, f"{section}.{key}",
                                         f"not a hyperparameter of model {self.model!r}",
                                         f"valid names: {', '.join(sorted(names))}")


def load_sweep_file(path: str | Path, name: str | None = None) -> SweepDefinition:
    """Read and check one sweep file; the sweep's name defaults to the file name without `.yaml`."""
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SweepFileError(str(path), "-", f"cannot be read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise SweepFileError(str(path), "-", f"is not valid YAML ({error})") from None
    return parse_sweep(name or path.stem, values, str(path))


def parse_sweep(name: str, values: Any, source: str) -> SweepDefinition:
    """Build a `SweepDefinition` from plain data, raising `SweepFileError` on the first problem."""
    if not isinstance(values, Mapping):
        raise SweepFileError(source, "-", "the file must hold a mapping of keys")
    for key in REQUIRED_KEYS:
        if key not in values:
            raise SweepFileError(source, key, "missing required key",
                                 f"a sweep file needs {', '.join(REQUIRED_KEYS)}")
    for key in values:
        if key not in REQUIRED_KEYS + OPTIONAL_KEYS:
            raise SweepFileError(source, str(key), "unknown key",
                                 f"valid keys: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}")
    metric, direction = parse_objective(values["objective"], source)
    fixed = values.get("fixed") or {}
    if not isinstance(fixed, Mapping):
        raise SweepFileError(source, "fixed", "must be a mapping of hyperparameter names to values")
    return SweepDefinition(
        name=name, model=str(values["model"]), metric=metric, direction=direction,
        n_trials=positive_int(values["n_trials"], "n_trials", source),
        n_epochs=positive_int(values["n_epochs"], "n_epochs", source),
        space=parse_space(values["search_space"], source), fixed=dict(fixed),
        sampler=parse_sampler(values.get("sampler"), source),
        pruner=parse_pruner(values.get("pruner"), source),
        description=str(values.get("description", "")), source=source)


def parse_objective(values: Any, source: str) -> tuple[str, str]:
    if isinstance(values, str):
        values = {"metric": values}
    if not isinstance(values, Mapping) or "metric" not in values:
        raise SweepFileError(source, "objective.metric", "missing required key",
                             "write objective: {metric: val/loss, direction: minimize}")
    direction = str(values.get("direction", "minimize"))
    if direction not in DIRECTIONS:
        raise SweepFileError(source, "objective.direction", f"{direction!r} is not one of {', '.join(DIRECTIONS)}")
    return str(values["metric"]), direction


def positive_int(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepFileError(source, key, f"must be a positive integer, got {value!r}")
    return value


def parse_space(values: Any, source: str) -> tuple[ParamSpace, ...]:
    if not isinstance(values, Mapping) or not values:
        raise SweepFileError(source, "search_space", "must be a non-empty mapping of hyperparameter ranges")
    return tuple(parse_param(str(name), spec, source) for name, spec in values.items())


def parse_param(name: str, spec: Any, source: str) -> ParamSpace:
    key = f"search_space.{name}"
    if isinstance(spec, list):  # a bare list is shorthand for a categorical choice
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise SweepFileError(source, f"{key}.type", "missing required key",
                             f"give one of {', '.join(PARAM_TYPES)}")
    kind = str(spec["type"])
    if kind not in PARAM_TYPES:
        raise SweepFileError(source, f"{key}.type", f"{kind!r} is not one of {', '.join(PARAM_TYPES)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SweepFileError(source, f"{key}.choices", "a categorical parameter needs a non-empty list")
        return ParamSpace(name, kind, choices=tuple(choices))
    return parse_range(name, kind, spec, source)


def parse_range(name: str, kind: str, spec: Mapping[str, Any], source: str) -> ParamSpace:
    key = f"search_space.{name}"
    bounds = []
    for bound in ("low", "high"):
        value = spec.get(bound)
        if value is None:
            raise SweepFileError(source, f"{key}.{bound}", "missing required key")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SweepFileError(source, f"{key}.{bound}", f"must be a finite number, got {value!r}")
        if kind == "int" and not float(value).is_integer():
            raise SweepFileError(source, f"{key}.{bound}", f"an int parameter needs whole bounds, got {value!r}")
        bounds.append(value)
    low, high = bounds
    if low > high:
        raise SweepFileError(source, key, f"low ({low}) > high ({high})", "swap the bounds")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise SweepFileError(source, f"{key}.low", f"a log-scale range needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and (log or not isinstance(step, (int, float)) or step <= 0):
        raise SweepFileError(source, f"{key}.step", "must be a positive number and cannot be used with log")
    if kind == "int":
        low, high = int(low), int(high)
    return ParamSpace(name, kind, low=low, high=high, log=log, step=step)


def parse_sampler(values: Any, source: str) -> dict[str, Any]:
    values = dict(values or {})
    kind = str(values.pop("type", "tpe"))
    if kind not in SAMPLERS:
        raise SweepFileError(source, "sampler.type", f"unknown sampler {kind!r}", f"use one of {', '.join(SAMPLERS)}")
    seed = values.pop("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SweepFileError(source, "sampler.seed", f"must be an integer, got {seed!r}")
    if kind == "tpe" and set(values) - {"n_startup_trials"}:
        raise SweepFileError(source, f"sampler.{sorted(values)[0]}", "unknown option of the tpe sampler",
                             "valid options: seed, n_startup_trials")
    if kind == "random" and values:
        raise SweepFileError(source, f"sampler.{sorted(values)[0]}", "unknown option of the random sampler",
                             "valid options: seed")
    return {"type": kind, "seed": seed, **values}


def parse_pruner(values: Any, source: str) -> dict[str, Any]:
    if isinstance(values, str):
        values = {"type": values}
    values = dict(values or {"type": "median"})
    kind = str(values.pop("type", "median"))
    if kind not in PRUNER_OPTIONS:
        raise SweepFileError(source, "pruner.type", f"unknown pruner {kind!r}",
                             f"use one of {', '.join(PRUNER_OPTIONS)}")
    for option, value in values.items():
        if option not in PRUNER_OPTIONS[kind]:
            valid = ", ".join(PRUNER_OPTIONS[kind]) or "none"
            raise SweepFileError(source, f"pruner.{option}", f"unknown option of the {kind} pruner",
                                 f"valid options: {valid}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise SweepFileError(source, f"pruner.{option}", f"must be a non-negative number, got {value!r}")
    if kind == "percentile" and not 0 <= values.get("percentile", 50) <= 100:
        raise SweepFileError(source, "pruner.percentile", "must be between 0 and 100")
    return {"type": kind, **values}
