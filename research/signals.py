"""Graceful SIGINT/SIGTERM handling for training.

The first signal requests that the loop stop after the current step, so it can write
a checkpoint and end the MLflow run KILLED. A second SIGINT or SIGTERM raises
`KeyboardInterrupt` at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


def in_main_thread() -> bool:
    # Python only lets the main thread install handlers; elsewhere signals keep
    # their default behaviour.
    return threading.current_thread() is threading.main_thread()


class StopRequest:
    """A context manager that turns the first SIGINT or SIGTERM into a stop request."""

    def __init__(self) -> None:
        self.signal_name: str = ""
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return bool(self.signal_name)

    def __enter__(self) -> StopRequest:
        if in_main_thread():
            for number in HANDLED:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.requested:
            raise KeyboardInterrupt(f"second {name}")
        self.signal_name = name
        logger.warning("%s received: stopping after the current step (press Ctrl-C again to stop at once)",
                       name)


def raise_keyboard_interrupt(number: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(number).name)


@contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Make SIGTERM raise `KeyboardInterrupt` like SIGINT, so that a run outside the loop still ends KILLED."""
    if not in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM inside the block, so that ending a run cannot be cut short."""
    if not in_main_thread():
        yield
        return
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in HANDLED}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
