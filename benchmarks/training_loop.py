"""One epoch of `research`'s loop against the reference notebook's data pipeline and loop.

The reference reads FashionMNIST through torchvision's `FashionMNIST` dataset
with a `ToTensor` transform and a `DataLoader`, and trains with a hand-written
loop. Both sides train the same autoencoder at the same batch size and thread
count on the same 48,000 training images and validate on the same 12,000.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import SIZES, Result, Timing, interleaved, ratio_text
from research.data import FILES, load, locate
from research.models.ae import Autoencoder
from research.spec import build_spec
from research.tracking import OfflineRun
from research.training import Trainer


def torchvision_root(directory: Path) -> Path:
    """Unpack the idx files where torchvision's `FashionMNIST(download=False)` looks for them."""
    _, paths = locate()
    raw = directory / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for key, (stem, _) in FILES.items():
        source = paths[key]
        opener = gzip.open if source.suffix == ".gz" else open
        with opener(source, "rb") as reader, open(raw / stem, "wb") as writer:
            shutil.copyfileobj(reader, writer)
    return directory


def reference_epoch(model: Autoencoder, optimizer: torch.optim.Optimizer, train_loader, val_loader) -> float:
    """Train and validate one epoch the way the notebook did."""
    model.train()
    for images, _ in train_loader:
        optimizer.zero_grad()
        loss = F.mse_loss(model(images), images)
        loss.backward()
        optimizer.step()
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for images, _ in val_loader:
            total += F.mse_loss(model(images), images, reduction="sum").item()
            count += images.numel()
    return total / count


def reference_loaders(root: Path, train_size: int | None, batch_size: int):
    from torch.utils.data import DataLoader, Subset, random_split
    from torchvision import transforms
    from torchvision.datasets import FashionMNIST

    dataset = FashionMNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
    generator = torch.Generator().manual_seed(0)
    train_set, val_set = random_split(dataset, [48_000, 12_000], generator=generator)
    if train_size is not None:
        train_set = Subset(train_set, range(train_size))
    return (DataLoader(train_set, batch_size=batch_size, shuffle=True),
            DataLoader(val_set, batch_size=batch_size, shuffle=False))


def run(size_name: str = "full") -> Result:
    size = SIZES[size_name]
    spec = build_spec("ae", {"n_epochs": 1, "train_size": size.train_size})
    data = load(train_size=size.train_size)

    with tempfile.TemporaryDirectory(prefix="bench-loop-") as tmp:
        root = torchvision_root(Path(tmp) / "tv")
        train_loader, val_loader = reference_loaders(root, size.train_size, spec.train.batch_size)
        torch.manual_seed(0)
        reference_model = Autoencoder(spec.model)
        optimizer = torch.optim.Adam(reference_model.parameters(), lr=spec.train.lr,
                                     weight_decay=spec.train.weight_decay)

        def ours() -> None:
            Trainer(spec, data, OfflineRun(), device=torch.device("cpu"), checkpoint_dir=Path(tmp) / "ckpt",
                    quiet=True, upload_checkpoints=False).fit()

        samples = interleaved({"research": ours,
                               "reference": lambda: reference_epoch(reference_model, optimizer,
                                                                    train_loader, val_loader)},
                              size.repeats)

    n_train = size.train_size or 48_000
    rows = [["reference: torchvision dataset + ToTensor + DataLoader, hand-written loop",
             Timing.of(samples["reference"]).text(), "1"],
            ["research: in-memory uint8 tensors, `Trainer` (checkpoints written)",
             Timing.of(samples["research"]).text(), ratio_text(samples["research"], samples["reference"])]]
    return Result(
        name="training_loop", title="Training loop: one epoch against the reference notebook",
        columns=["loop", "one epoch (median, range)", "ratio to reference"], rows=rows, size=size_name,
        notes=[f"One epoch: {n_train:,} training images and 12,000 validation images, the default `ae` "
               f"(n_channels {spec.model.n_channels}, latent_dim {spec.model.latent_dim}, "
               f"batch {spec.train.batch_size}), torch threads {torch.get_num_threads()}. Target: ratio ≤ 0.65."])
