"""Graceful SIGINT/SIGTERM handling for training.

The first signal asks the loop to stop after the current step, so it can write
a checkpoint and end the MLflow run KILLED. A second SIGINT raises
`KeyboardInterrupt` at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

logger = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context manager that turns the first SIGINT or SIGTERM into a stop request."""

    def __init__(self) -> None:
        self.signal_name: str = ""
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return bool(self.signal_name)

    def __enter__(self) -> StopRequest:
        # Python only lets the main thread install handlers; elsewhere signals keep
        # their default behaviour.
        if threading.current_thread() is threading.main_thread():
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
