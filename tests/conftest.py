"""Shared fixtures: a temporary MLflow store and working directory, and the real dataset."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from research.data import DATA_DIR_ENV, locate

# Tests train on small batches, where a second thread mostly adds synchronisation,
# and subprocess tests run beside this process on the same cores.
torch.set_num_threads(1)

# A reference classifier small enough for tests (2,048 images) that still separates the classes.
SMALL_REFERENCE = "n_epochs=2,train_size=2048,val_fraction=0.05,batch_size=64,lr=0.003"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder with its own MLflow SQLite store and cache."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RESEARCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The folder of the real FashionMNIST files; CI installs Debian's package."""
    folder, _ = locate()
    return folder


@pytest.fixture
def with_real_data(real_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(DATA_DIR_ENV, str(real_data_dir))
    return real_data_dir


def enter_store(folder: Path, real_data_dir: Path) -> tuple[pytest.MonkeyPatch, str]:
    """Make `folder` the working directory with its own MLflow store and cache; return the patch and store URI.

    For module-scoped fixtures, which cannot use `monkeypatch`; call `patch.undo()` when done.
    """
    patch = pytest.MonkeyPatch()
    patch.chdir(folder)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    patch.setenv("RESEARCH_CACHE_DIR", str(folder / "cache"))
    patch.setenv("RESEARCH_DATA_DIR", str(real_data_dir))
    return patch, uri


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None, compress: bool = False) -> Path:
    """Write `array` (uint8) as an idx file, gzipped when `compress`."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x803 if array.ndim == 3 else 0x801
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", size) for size in array.shape)
    data = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_fake_dataset(folder: Path, n_train: int = 60_000, n_test: int = 10_000, compress: bool = True) -> Path:
    """Write a random dataset of the real file names and sizes into `folder`."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, n, kind in (("train-images-idx3-ubyte", n_train, "images"),
                          ("train-labels-idx1-ubyte", n_train, "labels"),
                          ("t10k-images-idx3-ubyte", n_test, "images"),
                          ("t10k-labels-idx1-ubyte", n_test, "labels")):
        shape = (n, 28, 28) if kind == "images" else (n,)
        high = 256 if kind == "images" else 10
        write_idx(folder / stem, rng.integers(0, high, size=shape), compress=compress)
    return folder


@pytest.fixture(scope="session", autouse=True)
def small_reference_classifier() -> Iterator[None]:
    """Score generative runs with a small reference classifier, so that runs in tests stay quick."""
    from research.scoring import REFERENCE_ENV

    patch = pytest.MonkeyPatch()
    patch.setenv(REFERENCE_ENV, SMALL_REFERENCE)
    yield
    patch.undo()
