"""The training epoch on a GPU, with the dataset kept on the device."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.common import SIZES, Result, Timing, interleaved
from research.data import FashionMNIST, Split, load
from research.spec import build_spec
from research.tracking import OfflineRun
from research.training import Trainer


def on_device(data: FashionMNIST, device: torch.device) -> FashionMNIST:
    def move(split: Split) -> Split:
        return Split(split.images.to(device), split.labels.to(device))

    return FashionMNIST(move(data.train), move(data.val), move(data.test), data.source)


def run(size_name: str = "full") -> Result:
    columns = ["device", "one epoch (median, range)"]
    if not torch.cuda.is_available():
        return Result(name="gpu", title="GPU: one epoch with the data on the device", columns=columns,
                      rows=[["cuda", "skipped"]], size=size_name,
                      notes=["Skipped: CUDA is not available on this machine (torch.cuda.is_available() "
                             "is False). Run `python -m benchmarks --only gpu` on a machine with a GPU."])
    size = SIZES[size_name]
    spec = build_spec("ae", {"n_epochs": 1, "train_size": size.train_size})
    device = torch.device("cuda")
    data = on_device(load(train_size=size.train_size), device)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        def epoch() -> None:
            Trainer(spec, data, OfflineRun(), device=device, checkpoint_dir=Path(tmp), quiet=True,
                    upload_checkpoints=False).fit()
            torch.cuda.synchronize()

        epoch()  # warm-up: CUDA context and cuDNN autotuning
        samples = interleaved({"cuda": epoch}, size.repeats)
    return Result(name="gpu", title="GPU: one epoch with the data on the device", columns=columns,
                  rows=[[torch.cuda.get_device_name(0), Timing.of(samples["cuda"]).text()]], size=size_name)
