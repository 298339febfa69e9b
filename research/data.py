"""FashionMNIST from its four idx files, held in memory as uint8 tensors.

The files are found, in order, in an explicit folder (`--data-dir` or
`RESEARCH_DATA_DIR`), the project's data cache, and the folder where Debian's
`dataset-fashion-mnist` package installs them. Each may be gzipped or not.
Images stay uint8 until a batch is drawn, where they are scaled to [0, 1].
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from research.errors import DataError, UsageError

logger = logging.getLogger(__name__)

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
N_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 28

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
DATA_DIR_ENV = "RESEARCH_DATA_DIR"
CACHE_DIR_ENV = "RESEARCH_CACHE_DIR"

# File stems as published with the dataset; a file may also end in `.gz`.
FILES = {
    "train_images": ("train-images-idx3-ubyte", 60_000),
    "train_labels": ("train-labels-idx1-ubyte", 60_000),
    "test_images": ("t10k-images-idx3-ubyte", 10_000),
    "test_labels": ("t10k-labels-idx1-ubyte", 10_000),
}
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension

INSTALL_HINT = (
    "Get the dataset with `research data fetch` where there is internet, or install "
    "Debian's package: `apt-get install dataset-fashion-mnist` "
    f"(it puts the files in {DEBIAN_DIR}), or point --data-dir / {DATA_DIR_ENV} at a "
    "folder holding the four idx files."
)


def cache_dir() -> Path:
    """Return the project's cache folder (`RESEARCH_CACHE_DIR`, else ~/.cache/research)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "research"


def data_cache_dir() -> Path:
    return cache_dir() / "fashion-mnist"


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Return the folders searched for the dataset, in order."""
    explicit = data_dir or os.environ.get(DATA_DIR_ENV)
    dirs = [Path(explicit).expanduser()] if explicit else []
    return dirs + [data_cache_dir(), DEBIAN_DIR]


def find_file(folder: Path, stem: str) -> Path | None:
    # torchvision keeps its download under FashionMNIST/raw, so a folder that
    # torchvision filled works as a --data-dir too.
    for base in (folder, folder / "FashionMNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (base / name).is_file():
                return base / name
    return None


def locate(data_dir: str | Path | None = None) -> tuple[Path, dict[str, Path]]:
    """Return the first folder that contains all four files, and their paths.

    Raises `DataError` listing every place tried when none holds them all.
    """
    tried = []
    for folder in candidate_dirs(data_dir):
        paths = {key: find_file(folder, stem) for key, (stem, _) in FILES.items()}
        missing = [FILES[key][0] for key, path in paths.items() if path is None]
        if not missing:
            return folder, {key: path for key, path in paths.items() if path is not None}
        state = "does not exist" if not folder.is_dir() else f"lacks {', '.join(missing)}"
        tried.append(f"  {folder} ({state})")
    raise DataError("FashionMNIST not found. Places tried:\n" + "\n".join(tried) + "\n" + INSTALL_HINT)


def read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataError(f"cannot read {path}: {error} (the file is corrupt or truncated; "
                        "delete it and fetch the dataset again)") from None


def read_idx(path: str | Path, expected_count: int | None = None) -> torch.Tensor:
    """Read one idx file of unsigned bytes into a uint8 tensor, checking its header.

    Image files give (N, 28, 28), label files (N,) with values 0 to 9.
    """
    path = Path(path)
    data = read_bytes(path)
    if len(data) < 8:
        raise DataError(f"{path}: header truncated ({len(data)} bytes, an idx header needs at least 8)")
    magic, count = struct.unpack(">II", data[:8])
    if magic == IMAGES_MAGIC:
        header_size = 16
        if len(data) < header_size:
            raise DataError(f"{path}: image header truncated ({len(data)} of 16 bytes)")
        rows, cols = struct.unpack(">II", data[8:16])
        if (rows, cols) != (IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(f"{path}: images are {rows}x{cols}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
        shape: tuple[int, ...] = (count, rows, cols)
    elif magic == LABELS_MAGIC:
        header_size = 8
        shape = (count,)
    else:
        raise DataError(f"{path}: bad magic number 0x{magic:08x}; expected 0x{IMAGES_MAGIC:08x} "
                        f"(images) or 0x{LABELS_MAGIC:08x} (labels), so this is not an idx file "
                        "of unsigned bytes")
    if expected_count is not None and count != expected_count:
        raise DataError(f"{path}: header says {count} items, expected {expected_count}")
    n_bytes = 1
    for size in shape:
        n_bytes *= size
    body = data[header_size:]
    if len(body) != n_bytes:
        raise DataError(f"{path}: {len(body)} bytes of data after the header, expected {n_bytes} "
                        f"for {count} items (the file is truncated or has trailing bytes)")
    tensor = torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)
    if magic == LABELS_MAGIC and count and int(tensor.max()) >= 10:
        raise DataError(f"{path}: label {int(tensor.max())} found, labels must be 0 to 9")
    return tensor


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of one part of the dataset."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int) -> Split:
        return Split(self.images[:n], self.labels[:n])

    def batches(self, batch_size: int, *, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", drop_last: bool = False
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (images, labels) batches; images are float (B, 1, 28, 28) in [0, 1].

        With a generator the order is shuffled with it, else kept.
        """
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size] if order is not None else slice(start, start + batch_size)
            images = self.images[index].to(device, non_blocking=True)
            labels = self.labels[index].to(device, non_blocking=True)
            yield images.unsqueeze(1).float().div_(255.0), labels

    def n_batches(self, batch_size: int, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def float_images(self) -> torch.Tensor:
        """Return every image as float (N, 1, 28, 28) in [0, 1]."""
        return self.images.unsqueeze(1).float().div_(255.0)


@dataclass(frozen=True)
class FashionMNIST:
    """The dataset split into train, validation and test parts."""

    train: Split
    val: Split
    test: Split
    source: Path

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def load_raw(data_dir: str | Path | None = None) -> tuple[Path, dict[str, torch.Tensor]]:
    """Read the four files from the first folder that contains them."""
    folder, paths = locate(data_dir)
    tensors = {key: read_idx(paths[key]) for key in FILES}
    for split in ("train", "test"):
        if len(tensors[f"{split}_images"]) != len(tensors[f"{split}_labels"]):
            raise DataError(f"{folder}: {len(tensors[f'{split}_images'])} {split} images but "
                            f"{len(tensors[f'{split}_labels'])} {split} labels; the files do not belong together")
    return folder, tensors


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return train and validation indices of a seeded random split of `n` items."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_val = round(n * val_fraction)
    return order[n_val:], order[:n_val]


def load(data_dir: str | Path | None = None, *, val_fraction: float = 0.2, split_seed: int = 0,
         train_size: int | None = None) -> FashionMNIST:
    """Load FashionMNIST with a seeded train/validation split.

    `train_size` keeps the first N images of the training part (for quick runs);
    the validation and test parts are never shrunk by it.
    """
    folder, raw = load_raw(data_dir)
    train_index, val_index = split_train_val(len(raw["train_labels"]), val_fraction, split_seed)
    train = Split(raw["train_images"][train_index], raw["train_labels"][train_index].long())
    val = Split(raw["train_images"][val_index], raw["train_labels"][val_index].long())
    if train_size is not None:
        if train_size > len(train):
            raise UsageError(f"--train-size {train_size} is larger than the {len(train)} training images")
        train = train.subset(train_size)
    test = Split(raw["test_images"], raw["test_labels"].long())
    return FashionMNIST(train=train, val=val, test=test, source=folder)


def fetch(target: Path | None = None) -> Path:
    """Download the four files with torchvision into the data cache and check them.

    Where there is no internet, raises `DataError` saying how to install the
    Debian package instead.
    """
    import shutil
    import tempfile

    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

    target = target or data_cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fashion-mnist-", dir=target.parent) as tmp:
        try:
            for train in (True, False):
                TorchvisionFashionMNIST(tmp, train=train, download=True)
        except (OSError, RuntimeError) as error:
            raise DataError(f"download failed: {error}\nWithout internet, install Debian's package "
                            "instead: `apt-get install dataset-fashion-mnist` (as root, after "
                            f"`apt-get update`); research reads it from {DEBIAN_DIR}.") from None
        raw = Path(tmp) / "FashionMNIST" / "raw"
        for key, (stem, count) in FILES.items():
            read_idx(raw / stem, count)
            shutil.copyfile(raw / stem, target / stem)
    return target
