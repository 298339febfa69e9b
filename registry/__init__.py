"""A small, generic name → component registry with entry-point discovery.

The registry knows nothing about what it stores: models, sweep definitions or
anything else register under a name, and installed distributions add their own
through an entry-point group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "RegistryError", "UnknownNameError", "DuplicateNameError", "Entry"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RegistryError(Exception):
    """Base class of the errors raised by a registry."""


class UnknownNameError(RegistryError, KeyError):
    """A lookup named something that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind = kind
        self.name = name
        self.known = known
        choices = ", ".join(known) if known else "none"
        super().__init__(f"unknown {kind} {name!r}; registered {kind}s: {choices}")

    def __str__(self) -> str:
        return str(self.args[0])


class DuplicateNameError(RegistryError, ValueError):
    """Two components tried to register under the same name."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component and the metadata it was registered with."""

    name: str
    component: T
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "builtin"


class Registry(Generic[T]):
    """A mapping from names to components, filled by decorators and entry points.

    `kind` names what is stored ("model", "sweep") in error messages.
    `entry_point_group`, when given, is loaded once, lazily, the first time the
    registry is read, so that importing a plugin never happens at import time.
    """

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str, **metadata: Any) -> Callable[[T], T]:
        """Return a decorator that registers its target under `name`."""

        def decorator(component: T) -> T:
            self.add(name, component, **metadata)
            return component

        return decorator

    def add(self, name: str, component: T, *, source: str = "builtin", replace: bool = False,
            **metadata: Any) -> Entry[T]:
        """Register `component` under `name`; a taken name raises unless `replace`."""
        if not name or not isinstance(name, str):
            raise RegistryError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        existing = self._entries.get(name)
        if existing is not None and not replace and existing.component is not component:
            raise DuplicateNameError(
                f"{self.kind} {name!r} is already registered (from {existing.source}); "
                "choose another name"
            )
        entry = Entry(name=name, component=component, metadata=dict(metadata), source=source)
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Unregister `name`; unknown names raise `UnknownNameError`."""
        self.find_or_raise(name)
        del self._entries[name]

    def find_or_raise(self, name: str) -> Entry[T]:
        """Return the entry registered as `name`, or raise `UnknownNameError` listing the names."""
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def get(self, name: str) -> T:
        """Return the component registered as `name`; see `find_or_raise`."""
        return self.find_or_raise(name).component

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        self._load_plugins()
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        """Yield every entry, sorted by name."""
        for name in self.names():
            yield self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __len__(self) -> int:
        self._load_plugins()
        return len(self._entries)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        # Set first: a plugin module that reads the registry while it is being
        # imported must not start the discovery again.
        self._plugins_loaded = True
        for entry_point in entry_points(group=self.entry_point_group):
            self.load_entry_point(entry_point)

    def load_entry_point(self, entry_point: Any) -> None:
        """Import one entry point and register what it names.

        The entry point's object is registered under the entry point's name unless
        importing it already registered that name (the decorator form). A plugin
        that fails to import is logged and skipped, so one broken distribution
        does not take the others down.
        """
        source = f"entry point {entry_point.value!r}"
        if entry_point.dist is not None:
            source += f" of {entry_point.dist.name}"
        try:
            component = entry_point.load()
        except Exception as error:  # noqa: BLE001 - any plugin import failure is reported, not fatal
            logger.warning("Skipping %s %r from %s: %s", self.kind, entry_point.name, source, error)
            return
        if entry_point.name in self._entries:
            return
        self.add(entry_point.name, component, source=source)

    def reload_plugins(self) -> None:
        """Discover the entry-point group again (after installing a distribution)."""
        self._plugins_loaded = self.entry_point_group is None
        self._load_plugins()
