"""Self-describing checkpoints written atomically and read without unpickling code.

A checkpoint is a dict of plain data and tensors: the model name and its
config, the weights, the training state needed to resume, and a format tag.
`torch.load(path, weights_only=True)` reads it, so loading never runs code
stored in the file.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from research.errors import CheckpointError

FORMAT = "research.checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "model_name", "config", "model_state")


def save_checkpoint(payload: Mapping[str, Any], path: str | Path) -> Path:
    """Write `payload` to `path` through a temporary file and a rename.

    A process killed during the write leaves the previous file at `path` intact,
    because the rename is the only step that touches it. Raises `CheckpointError`
    naming the file when the folder cannot be written (a full disk, say).
    """
    path = Path(path)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, **payload}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise CheckpointError(f"cannot write checkpoint {path}: {error.strerror or error}; "
                              "free space or permissions in that folder") from error
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        # torch.save reports a failed write (ENOSPC, say) as a RuntimeError from its zip writer.
        if isinstance(error, (OSError, RuntimeError)):
            reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
            raise CheckpointError(f"cannot write checkpoint {path}: {reason}; "
                                  "the previous checkpoint there is unchanged") from error
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`.

    Raises `CheckpointError` naming the file when it is missing, truncated,
    corrupt, or not a checkpoint of this project.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: it is truncated, corrupt or not a "
                              f"checkpoint written by research ({reason})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a research checkpoint (no '{FORMAT}' format tag); "
                              "pass a checkpoint that a research run wrote")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    if data["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {data['format_version']}, "
                              f"this research reads up to {FORMAT_VERSION}; upgrade research")
    return data


def build_model_from_checkpoint(data: Mapping[str, Any], source: str = "checkpoint") -> Any:
    """Rebuild the registered model a checkpoint describes, with its weights, in eval mode."""
    from research.models import find_model_or_raise

    model_class = find_model_or_raise(data["model_name"])
    config = model_class.Config.from_dict(data["config"])
    model = model_class(config)
    try:
        model.load_state_dict(data["model_state"])
    except RuntimeError as error:
        raise CheckpointError(f"{source}: weights do not fit model {data['model_name']!r}: "
                              f"{str(error).splitlines()[0]}") from None
    model.load_extra_state(data.get("extra_state", {}))
    return model.eval()


def load_model_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """Load a checkpoint file into its model, on `device`."""
    data = load_checkpoint(path)
    return build_model_from_checkpoint(data, str(path)).to(device)
