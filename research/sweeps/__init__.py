"""Named sweeps: Optuna studies defined by YAML files and found through a registry.

Sweeps are registered by name from, in this order, the `sweeps/` folder next to
the package (a source checkout), the `sweeps/` folder of the working directory,
the folders in `RESEARCH_SWEEPS_DIR` (os.pathsep-separated) and `--sweeps-dir`,
and the `research.sweeps` entry-point group. A later folder replaces a sweep of
the same name from an earlier one. An entry point may name a `SweepDefinition`,
a mapping with a sweep file's keys, or the path of a sweep file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import research
from registry import Registry
from research.sweeps.definition import ParamSpace, SweepDefinition, SweepFileError, load_sweep_file, parse_sweep

__all__ = ["SWEEPS", "ParamSpace", "SweepDefinition", "SweepFileError", "find_sweep_or_raise",
           "load_sweep_file", "register_sweep_folders", "sweep_folders"]

logger = logging.getLogger(__name__)

SWEEPS_DIR_ENV = "RESEARCH_SWEEPS_DIR"
SWEEPS: Registry[Any] = Registry("sweep", entry_point_group="research.sweeps")


def sweep_folders(extra: Iterable[str | Path] = ()) -> list[Path]:
    """Return the folders searched for sweep files, lowest precedence first."""
    folders = [Path(research.__file__).resolve().parents[1] / "sweeps", Path.cwd() / "sweeps"]
    from_env = os.environ.get(SWEEPS_DIR_ENV, "")
    folders += [Path(part) for part in from_env.split(os.pathsep) if part]
    folders += [Path(folder) for folder in extra]
    unique: list[Path] = []
    for folder in folders:
        if folder.resolve() not in [known.resolve() for known in unique]:
            unique.append(folder)
    return unique


def register_sweep_folders(extra: Iterable[str | Path] = ()) -> None:
    """Register every `*.yaml` file of the sweep folders under its file name.

    Files are only listed here; they are read and checked when a sweep is
    looked up, so one broken file does not hide the others.
    """
    for folder in sweep_folders(extra):
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            SWEEPS.add(path.stem, path.resolve(), source=str(folder), replace=True)


def find_sweep_or_raise(name: str) -> SweepDefinition:
    """Return the sweep registered as `name`, read and checked against its model.

    Raises `UnknownNameError` listing the registered sweeps, or `SweepFileError`.
    """
    definition = definition_of(name, SWEEPS.get(name))
    definition.check_model()
    return definition


def definition_of(name: str, component: Any) -> SweepDefinition:
    """Turn a registered component (definition, mapping or file path) into a `SweepDefinition`."""
    if isinstance(component, SweepDefinition):
        return component
    if isinstance(component, Mapping):
        return parse_sweep(name, component, f"entry point {name!r}")
    if isinstance(component, (str, Path)):
        return load_sweep_file(component, name)
    raise SweepFileError(f"entry point {name!r}", "-",
                         f"a sweep entry point must name a SweepDefinition, a mapping or a file path, "
                         f"not {type(component).__name__}")
