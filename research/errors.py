"""Exception types of the project.

Every error a user can cause or meet derives from `ResearchError`, so the CLI
can print its message without a traceback. `UsageError` marks mistakes in what
the user asked for (exit status 2); the others are runtime failures (status 1).
"""

from __future__ import annotations


class ResearchError(Exception):
    """Base class of the project's errors; the message is meant for the user."""


class UsageError(ResearchError):
    """The request itself is invalid: a bad value, name or combination of options."""


class ConfigError(UsageError, ValueError):
    """A hyperparameter has an invalid value."""

    def __init__(self, name: str, value: object, rule: str, fix: str | None = None) -> None:
        self.name = name
        self.value = value
        self.rule = rule
        message = f"invalid value {value!r} for {name}: {rule}"
        if fix:
            message += f"; {fix}"
        super().__init__(message)


class DataError(ResearchError):
    """The dataset is missing, truncated or corrupt."""


class CheckpointError(ResearchError):
    """A checkpoint file cannot be read or does not fit what it is loaded into."""


class TrackingError(ResearchError):
    """The MLflow tracking store failed or did not respond."""


class NonFiniteLossError(ResearchError):
    """Training produced a NaN or infinite loss."""

    def __init__(self, loss: str, value: float, epoch: int, step: int) -> None:
        self.loss = loss
        self.value = value
        self.epoch = epoch
        self.step = step
        super().__init__(
            f"non-finite {loss} ({value}) at epoch {epoch}, step {step}; "
            "try a smaller learning rate or gradient clipping"
        )


class TrainingInterrupted(ResearchError):
    """Training stopped on SIGINT or SIGTERM after writing a checkpoint."""

    def __init__(self, signal_name: str, epoch: int) -> None:
        self.signal_name = signal_name
        self.epoch = epoch
        super().__init__(f"training interrupted by {signal_name} during epoch {epoch}")
