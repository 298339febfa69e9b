"""Experiment tracking for unsupervised deep learning on FashionMNIST."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load_model(uri: str, device: Any = "cpu") -> Any:
    """Load a research model from `models:/…`, `runs:/…` or a checkpoint file onto `device`.

    See `research.loading` for the accepted URIs. The import happens here so that
    `import research` does not load torch and MLflow.
    """
    from research.loading import load_model as load

    return load(uri, device)


__all__ = ["__version__", "load_model"]
